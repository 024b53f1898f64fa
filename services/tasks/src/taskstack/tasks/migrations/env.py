from taskstack.common.migrations import run_env
from taskstack.tasks.models import TasksTable

run_env(TasksTable.metadata)
