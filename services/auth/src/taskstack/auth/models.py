"""The auth service's tables (schema "auth") and its public schemas."""

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, EmailStr, StringConstraints
from sqlalchemy import BigInteger, DateTime, Identity, Index, LargeBinary, text
from sqlmodel import Field, SQLModel

from taskstack.auth.passwords import MAX_LENGTH, MIN_LENGTH
from taskstack.common.models import Entity, StrictModel, UUIDPrimaryKey, schema_metadata, table_of

SCHEMA = "auth"
MAX_EMAIL_LENGTH = 254


class AuthTable(SQLModel):
    """Base of every table the auth service owns."""

    metadata = schema_metadata(SCHEMA)


def _aware() -> DateTime:
    return DateTime(timezone=True)


class UserBase(SQLModel):
    email: str = Field(max_length=MAX_EMAIL_LENGTH)


class User(Entity, UserBase, AuthTable, table=True):
    __table_args__ = (Index("uq_user_email_lower", text("lower(email)"), unique=True),)

    password_hash: str
    email_verified_at: datetime | None = Field(default=None, sa_type=_aware())
    # A disabled account (by an operator) cannot sign in or refresh.
    disabled_at: datetime | None = Field(default=None, sa_type=_aware())


class UserPublic(UserBase):
    id: uuid.UUID
    created_at: datetime
    email_verified: bool

    @classmethod
    def of(cls, user: User) -> "UserPublic":
        return cls(
            id=user.id,
            email=user.email,
            created_at=user.created_at,
            email_verified=user.email_verified_at is not None,
        )


class RefreshTokenFamily(UUIDPrimaryKey, AuthTable, table=True):
    """One sign-in session: every refresh token rotated from one password grant."""

    __tablename__ = "refresh_token_family"

    user_id: uuid.UUID = Field(foreign_key="auth.user.id", ondelete="CASCADE", index=True)
    created_at: datetime = Field(sa_type=_aware())
    expires_at: datetime = Field(sa_type=_aware())
    revoked_at: datetime | None = Field(default=None, sa_type=_aware())


class RefreshToken(UUIDPrimaryKey, AuthTable, table=True):
    """One refresh token of a family, stored only as its SHA-256 digest."""

    __tablename__ = "refresh_token"

    family_id: uuid.UUID = Field(
        foreign_key="auth.refresh_token_family.id", ondelete="CASCADE", index=True
    )
    token_hash: bytes = Field(sa_type=LargeBinary, unique=True)
    created_at: datetime = Field(sa_type=_aware())
    idle_expires_at: datetime = Field(sa_type=_aware())
    spent_at: datetime | None = Field(default=None, sa_type=_aware())


class ThrottleCounter(AuthTable, table=True):
    """Failures counted per key ("login-account:<email>", "login-ip:<ip>", "register-ip:<ip>")."""

    __tablename__ = "throttle_counter"

    key: str = Field(primary_key=True, max_length=300)
    failures: int
    window_started_at: datetime = Field(sa_type=_aware())
    blocked_until: datetime | None = Field(default=None, sa_type=_aware())


class OneTimeToken(UUIDPrimaryKey, AuthTable, table=True):
    """A single-use token mailed to an account (verify the address, reset the password),
    stored only as its SHA-256 digest and bound to the account and the purpose."""

    __tablename__ = "one_time_token"

    user_id: uuid.UUID = Field(foreign_key="auth.user.id", ondelete="CASCADE", index=True)
    purpose: str = Field(max_length=20)
    token_hash: bytes = Field(sa_type=LargeBinary, unique=True)
    created_at: datetime = Field(sa_type=_aware())
    expires_at: datetime = Field(sa_type=_aware())
    used_at: datetime | None = Field(default=None, sa_type=_aware())


class MailOutbox(UUIDPrimaryKey, AuthTable, table=True):
    """A mail waiting for delivery, written in the transaction of the change that causes it."""

    __tablename__ = "mail_outbox"
    __table_args__ = (Index("ix_mail_outbox_next_attempt_at", "next_attempt_at"),)

    recipient: str = Field(max_length=MAX_EMAIL_LENGTH)
    subject: str
    text_body: str
    html_body: str
    created_at: datetime = Field(sa_type=_aware())
    next_attempt_at: datetime = Field(sa_type=_aware())
    attempts: int = 0
    last_error: str | None = None


class AccountEvent(AuthTable, table=True):
    """An account deleted, disabled or enabled, for the tasks service to act on: written
    with the change, pushed until tasks has acknowledged it (at least once, in order of
    ``id`` per account, which tasks uses to apply each account's events once)."""

    __tablename__ = "account_event"
    __table_args__ = (Index("ix_account_event_next_attempt_at", "next_attempt_at"),)

    id: int | None = Field(
        default=None, sa_type=BigInteger, primary_key=True, sa_column_args=[Identity()]
    )
    user_id: uuid.UUID
    kind: str = Field(max_length=20)
    created_at: datetime = Field(sa_type=_aware())
    next_attempt_at: datetime = Field(sa_type=_aware())
    attempts: int = 0
    last_error: str | None = None


def _trim(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _lower_domain(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


# Trimmed, domain lower-cased; unique case-insensitively (the index above).
Email = Annotated[
    EmailStr,
    BeforeValidator(_trim),
    StringConstraints(max_length=MAX_EMAIL_LENGTH),
    AfterValidator(_lower_domain),
]


# What password_problem() checks that a schema can say; the service checks it
# itself, to answer with its own message.
_NEW_PASSWORD_SCHEMA: dict[str, Any] = {
    "minLength": MIN_LENGTH,
    "maxLength": MAX_LENGTH,
    "pattern": r"^[^\x00]*$",
}


class Registration(StrictModel):
    """A new account: the body of POST /v1/auth/register."""

    email: Email = Field(
        description=(
            "An address at a special-use domain (RFC 6761: .test, .invalid, .localhost, "
            ".local, .onion, .arpa) is refused: it can never receive mail."
        )
    )
    password: str = Field(
        description="8 to 1024 characters; not a common password.",
        schema_extra={"json_schema_extra": _NEW_PASSWORD_SCHEMA},
    )


class RegistrationAccepted(SQLModel):
    """The answer to a registration, the same whether or not the address had an account."""

    email: str
    detail: str = (
        "Check your inbox: a mail to this address says what to do next "
        "(verify the address, or sign in if it already has an account)."
    )


class MailRequested(SQLModel):
    """The answer to a request for a mail (a verification resend, a password reset): the
    same whether or not the address has an account, so it tells nobody which do."""

    detail: str = "Accepted: a mail is on its way if the address has an account that needs one."


class AccountDeletion(StrictModel):
    """The body of DELETE /v1/auth/me: the current password, checked again."""

    password: str = Field(max_length=4096)


class AddressRequest(StrictModel):
    """The body of a request for a mail: a verification resend, a password reset."""

    email: Email


class LinkToken(StrictModel):
    """The token of a mailed link."""

    token: str = Field(min_length=1, max_length=4096)


class PasswordReset(StrictModel):
    token: str = Field(min_length=1, max_length=4096)
    new_password: str = Field(
        description="8 to 1024 characters; not a common password, not the e-mail address.",
        schema_extra={"json_schema_extra": _NEW_PASSWORD_SCHEMA},
    )


class PasswordChange(StrictModel):
    current_password: str = Field(max_length=4096)
    new_password: str = Field(
        description="8 to 1024 characters; not a common password, not the e-mail address.",
        schema_extra={"json_schema_extra": _NEW_PASSWORD_SCHEMA},
    )


class TokenPair(SQLModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    refresh_token: str


class OAuthErrorAnswer(SQLModel):
    """RFC 6749 §5.2 error answer of the token endpoint."""

    error: str
    error_description: str | None = None


user_table = table_of(User)
one_time_token_table = table_of(OneTimeToken)
mail_outbox_table = table_of(MailOutbox)
account_event_table = table_of(AccountEvent)
refresh_token_family_table = table_of(RefreshTokenFamily)
refresh_token_table = table_of(RefreshToken)
