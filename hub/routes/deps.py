"""Authentication (bearer tokens, roles) and access to the operations services, as FastAPI dependencies.

- no or malformed ``Authorization: Bearer`` header, unknown, revoked or expired token: **401** with
  ``WWW-Authenticate: Bearer``;
- a valid token without the role the route needs: **403** naming the role needed and the token's role;
- a resource outside a ward-limited token's wards: **404**, as if it did not exist (no existence leak).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub.auth import Principal
from hub.operations.operations import Operations
from hub.routes.guard import BEARER_REFUSED, NO_BEARER, PRINCIPAL_STATE

_bearer = HTTPBearer(auto_error=False, description="An API token: `ioc hub token create --role ROLE`.")


def operations(request: Request) -> Operations:
    ops: Operations | None = getattr(request.app.state, "operations", None)
    if ops is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the operations services are not running")
    return ops


Ops = Annotated[Operations, Depends(operations)]


def require(role: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller and checks that the token has at least ``role``."""

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> Principal:
        # Authenticated already, before the body was read, for /api/ paths (hub/routes/guard.py); /metrics and
        # the counters with ``http.metrics_need_token`` come here with the header alone.
        principal: Principal | None = getattr(request.state, PRINCIPAL_STATE, None)
        if principal is None:
            if credentials is None or credentials.scheme.lower() != "bearer":
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, NO_BEARER, headers={"WWW-Authenticate": "Bearer"})
            principal = await operations(request).tokens.authenticate(credentials.credentials)
            if principal is None:
                raise HTTPException(
                    status.HTTP_401_UNAUTHORIZED, BEARER_REFUSED, headers={"WWW-Authenticate": "Bearer"}
                )
        if not principal.has(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the role {role!r} or higher; the token's role is {principal.role!r}",
            )
        return principal

    return dependency


Viewer = Annotated[Principal, Depends(require("viewer"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Technician = Annotated[Principal, Depends(require("technician"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def not_found(what: str, ident: Any) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {ident!r} not found")
