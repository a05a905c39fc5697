"""The caller's own account."""

from fastapi import APIRouter

from jjhub.api.deps import CurrentUser
from jjhub.api.schemas_forge import UserOut

router = APIRouter(tags=["users"])


@router.get("/api/user", response_model=UserOut)
def read_current_user(user: CurrentUser) -> UserOut:
    """The user the token belongs to."""
    return UserOut.of(user)
