from sqlalchemy import MetaData

from taskstack.common.migrations import run_env

run_env(MetaData(schema="lockdemo"))
