"""The auth service's settings, read from the environment."""

from taskstack.common.settings import ServiceSettings


class AuthSettings(ServiceSettings):
    pass
