"""The tasks service's settings, read from the environment."""

from taskstack.common.settings import ServiceSettings


class TasksSettings(ServiceSettings):
    pass
