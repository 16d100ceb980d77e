"""Local mode: ``stagecoach run`` executes a pipeline on this machine, no cluster needed.

The executor runs the engine's actions with asyncio (agent stages in-process through the
runner, run stages as subprocesses) and writes the run directory of DESIGN §5.
"""

from .executor import LocalExecutor, RunOptions
from .rundir import RunDir, new_run_dir

__all__ = ["LocalExecutor", "RunDir", "RunOptions", "new_run_dir"]
