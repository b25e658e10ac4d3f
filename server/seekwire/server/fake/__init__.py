"""A fake DeepSeek over real HTTP, faithful to the wire format, with fault injection.

Used by the tests, `seekwire serve --fake-upstream` and the benchmarks.
"""

from seekwire.server.fake.app import FakeDeepSeek, ReceivedRequest
from seekwire.server.fake.behavior import Behavior

__all__ = ["Behavior", "FakeDeepSeek", "ReceivedRequest"]
