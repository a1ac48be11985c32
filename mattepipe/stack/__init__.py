"""The local stack: every service its own process under Supervisor (`mattepipe stack`).

`config` turns the settings into Supervisor's programs and file; `supervisor` starts, watches
and stops them."""

from mattepipe.stack.config import (
    INTERNAL_TOKEN_FILE,
    SECRET_FIELDS,
    STOP_WAIT_S,
    Program,
    StackError,
    health_urls,
    internal_url,
    local_url,
    program_url,
    render_config,
    repo_root,
    stack_environment,
    stack_programs,
    supervisor_bin,
    with_internal_token,
    write_config,
)
from mattepipe.stack.supervisor import (
    READY_TIMEOUT_S,
    run_stack,
    start_stack,
    stop_stack,
    wait_healthy,
)

__all__ = [
    "INTERNAL_TOKEN_FILE",
    "READY_TIMEOUT_S",
    "SECRET_FIELDS",
    "STOP_WAIT_S",
    "Program",
    "StackError",
    "health_urls",
    "internal_url",
    "local_url",
    "program_url",
    "render_config",
    "repo_root",
    "run_stack",
    "stack_environment",
    "stack_programs",
    "start_stack",
    "stop_stack",
    "supervisor_bin",
    "wait_healthy",
    "with_internal_token",
    "write_config",
]
