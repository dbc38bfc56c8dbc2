"""Worker processes never hang or outlive a run (issue 22, point 6): a worker killed with kill -9 is a
clear error within seconds; Ctrl-C or a killed main process leaves no worker behind and no shared
memory in /dev/shm."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from dcnn.data.loader import Loader, WorkerError
from dcnn.data.sources import image_folder
from test_loader import make_folder

psutil = pytest.importorskip("psutil")
pytest.importorskip("grain")

ROOT = Path(__file__).resolve().parents[1]
SHM = Path("/dev/shm")


def workers_of(pid):
    """The loader workers among a process's descendants (grain spawns them; the resource tracker is not one)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmd:
            found.append(child)
    return found


def leaked_shm(before: set) -> list[str]:
    """Entries of /dev/shm made since ``before`` that no living process has open or mapped (others'
    tests may be using /dev/shm at the same time: theirs are in use, ours would not be)."""
    new = {p.name for p in SHM.iterdir()} - before if SHM.is_dir() else set()
    if not new:
        return []
    in_use = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            in_use.update(line.rsplit("/", 1)[-1] for line in (proc / "maps").read_text().splitlines()
                          if "/dev/shm/" in line)
            in_use.update(os.readlink(fd).rsplit("/", 1)[-1] for fd in (proc / "fd").iterdir()
                          if os.readlink(fd).startswith("/dev/shm/"))
        except OSError:
            continue
    return sorted(n for n in new if n not in in_use and (SHM / n).exists())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("workers") / "pics", per_class=(40, 40, 40), size=32)


def test_a_worker_killed_with_kill_9_is_a_clear_error_within_seconds(folder):
    loader = Loader(image_folder(folder)[0], 4, workers=2)
    it = iter(loader)
    next(it)
    prefix = loader._engine.prefix                 # its batches' shared memory is named after it
    time.sleep(0.5)                                # let the workers fill their buffers
    assert not SHM.is_dir() or list(SHM.glob(prefix + "*"))
    victims = workers_of(os.getpid())
    assert len(victims) == 2
    os.kill(victims[0].pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(WorkerError, match="worker process was killed by SIGKILL .*; the other workers have been stopped"):
        for _ in it:
            pass
    assert time.monotonic() - start < 10
    gone, alive = psutil.wait_procs(victims, timeout=30)
    assert not alive
    assert not SHM.is_dir() or not list(SHM.glob(prefix + "*"))     # nothing left behind by the dead one
    # the loader can be iterated again: new workers, from where it stood
    step = loader.step
    x, _ = next(iter(loader))
    assert loader.step == step + 1 and x.shape == (4, 3, 32, 32)
    loader.close()
    assert not workers_of(os.getpid())


SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from dcnn import Conv2D, DCNNetwork, Dense, Flatten
    from dcnn.data.loader import Loader
    from dcnn.data.sources import image_folder
    from dcnn.model.callbacks import Callback

    class Ready(Callback):
        def on_batch_end(self, step, logs):
            if step == 2:
                print("ready", flush=True)
            time.sleep(0.02)

    def main():
        net = DCNNetwork([Conv2D(2, 3), Flatten(), Dense(3)], input_shape=(3, 32, 32))
        net.compile("sgd", lr=0.01)
        net.fit(Loader(image_folder({folder!r})[0], 4, workers=2), epochs=10**6, verbose=0, callbacks=[Ready()])

    if __name__ == "__main__":
        main()
""")


@pytest.mark.parametrize("how", ["ctrl-c", "sigint-to-main", "kill-9-main"])
def test_stopping_the_main_process_leaves_no_worker_and_no_shared_memory(folder, tmp_path, how):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(root=str(ROOT), folder=str(folder)))
    before = {p.name for p in SHM.iterdir()} if SHM.is_dir() else set()
    env = {**os.environ, "DCNN_BACKEND": "numpy", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        workers = workers_of(proc.pid)
        assert len(workers) == 2
        if how == "ctrl-c":                       # a terminal sends SIGINT to the whole process group
            os.killpg(proc.pid, signal.SIGINT)
        elif how == "sigint-to-main":
            os.kill(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        start = time.monotonic()
        code = proc.wait(timeout=60)
        gone, alive = psutil.wait_procs(workers, timeout=15)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in locals().get("workers", []):      # never leave one behind, even when the test fails
            if w.is_running():
                w.kill()
    assert not alive, f"{how}: workers {[p.pid for p in alive]} outlived the main process"
    assert took < 15, f"{how}: stopping took {took:.1f} s"
    if how == "kill-9-main":
        assert code == -signal.SIGKILL
    else:
        assert code != 0 and "KeyboardInterrupt" in proc.stderr.read()
    time.sleep(1)                                  # the resource tracker cleans up after the last of them
    assert leaked_shm(before) == []


def test_a_script_without_a_main_guard_gets_an_error_not_a_hang(folder, tmp_path):
    """Workers import the main script as they start; unguarded, it would make loaders of its own."""
    script = tmp_path / "unguarded.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                      "from dcnn.data.loader import Loader\nfrom dcnn.data.sources import image_folder\n"
                      f"for x, y in Loader(image_folder({str(folder)!r})[0], 4, workers=2):\n    break\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 1
    assert 'WorkerError: a data loader worker process exited with status 1' in result.stderr
    assert 'must do so under `if __name__ == "__main__":`' in result.stderr
