"""gRPC server interceptors, outermost first in app.py: each wraps every handler kind."""
