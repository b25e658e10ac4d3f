"""ModelService (`GET /models`) and AccountService (`GET /user/balance`)."""

from __future__ import annotations

from seekwire.server.convert import from_json
from seekwire.server.services.calls import Context, caller_deadline
from seekwire.server.upstream.client import Upstream
from seekwire.v1 import account_pb2, account_pb2_grpc, model_pb2, model_pb2_grpc


class ModelService(model_pb2_grpc.ModelServiceServicer):
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    async def ListModels(
        self, request: model_pb2.ListModelsRequest, context: Context
    ) -> model_pb2.ListModelsResponse:
        data = await self._upstream.call("GET", "/models", None, caller_deadline(context))
        return from_json(model_pb2.ListModelsResponse, data)


class AccountService(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    async def GetBalance(
        self, request: account_pb2.GetBalanceRequest, context: Context
    ) -> account_pb2.GetBalanceResponse:
        data = await self._upstream.call("GET", "/user/balance", None, caller_deadline(context))
        return from_json(account_pb2.GetBalanceResponse, data)
