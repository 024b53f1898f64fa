from taskstack.auth.models import AuthTable
from taskstack.common.migrations import run_env

run_env(AuthTable.metadata)
