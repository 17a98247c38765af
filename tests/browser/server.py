"""A real JupyterLab server for the browser tests: loopback only, a token, and its own config.

Every directory JupyterLab reads or writes (config, data, runtime, settings, workspaces) is a
temporary one, so a developer's own JupyterLab setup cannot change what the tests see and the
tests leave nothing in their home folder. Recipe: ../shared/reference/jupyter-browser.md.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from labkit.net import free_port, wait_until_ready

# The announcements plugin asks "get notified about official Jupyter news?" in a toast even with
# news_url=None; the toast covers the notebook in screenshots and steals clicks.
DISABLED_PLUGINS = {"@jupyterlab/apputils-extension:announcements": True}
# Autosave would write the run's outputs into labs/*.ipynb, which are sources under git: the
# tests open the labs where students open them (their paths are relative to labs/), never save.
USER_SETTINGS = {"@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False}}


class JupyterLab:
    """`jupyter lab` on 127.0.0.1:<free port> serving `root`; `stop()` ends it and its kernels."""

    def __init__(self, root: Path, *, start_timeout: float = 120.0) -> None:
        self.root = root
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="labkit-browser-"))
        self.log_path = self.home / "jupyter.log"
        env = dict(os.environ, **self._isolated_dirs())
        command = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
            f"--port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
            # Checkpoints JupyterLab makes on opening go here, not into labs/.ipynb_checkpoints.
            f"--FileCheckpoints.checkpoint_dir={self.home / 'checkpoints'}",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        if os.geteuid() == 0:
            command.append("--allow-root")  # else the server refuses to start as root
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - the server's log for its lifetime; stop() closes it
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        try:
            wait_until_ready(f"{self.base_url}/api/status?token={self.token}", start_timeout,
                             process=self.process)
        except BaseException:
            self.stop()
            raise

    def _isolated_dirs(self) -> dict[str, str]:
        dirs = {name: self.home / sub for name, sub in (
            ("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
            ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
            ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"))}
        for path in dirs.values():
            path.mkdir(parents=True)
        (dirs["JUPYTER_CONFIG_DIR"] / "labconfig").mkdir()
        (dirs["JUPYTER_CONFIG_DIR"] / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": DISABLED_PLUGINS}))
        for relative, values in USER_SETTINGS.items():
            path = dirs["JUPYTERLAB_SETTINGS_DIR"] / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        return {name: str(path) for name, path in dirs.items()}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, notebook: str, workspace: str) -> str:
        """The notebook in a workspace of its own: /lab/tree/ would restore the default workspace
        with every notebook opened before, and the test could drive the wrong one."""
        return f"{self.base_url}/lab/workspaces/{workspace}/tree/{notebook}?token={self.token}"

    def api(self, method: str, path: str) -> Any:
        """Call the server's REST API; JSON answer, or None for an empty one."""
        request = urllib.request.Request(f"{self.base_url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernel_ids(self) -> list[str]:
        return [kernel["id"] for kernel in self.api("GET", "kernels")]

    def sessions(self) -> dict[str, tuple[str, str]]:
        """Notebook path -> (session id, kernel id), for each notebook that has a kernel."""
        return {session["path"]: (session["id"], session["kernel"]["id"])
                for session in self.api("GET", "sessions")}

    def session(self, notebook: str) -> tuple[str, str]:
        """(session id, kernel id) of the notebook open in JupyterLab."""
        try:
            return self.sessions()[notebook]
        except KeyError:
            raise LookupError(f"no session for {notebook}") from None

    def kernel_pid(self, kernel_id: str) -> int | None:
        """The pid of a kernel this server started (its argv names its connection file)."""
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if any(f"kernel-{kernel_id}.json" in arg for arg in child.cmdline()):
                    return child.pid
            except psutil.NoSuchProcess:
                continue
        return None

    def shutdown_kernels(self) -> None:
        for kernel_id in self.kernel_ids():
            self.api("DELETE", f"kernels/{kernel_id}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.shutdown_kernels()  # else SIGTERM waits a minute on the kernels
            except OSError:
                pass
            self.process.terminate()  # jupyter_server shuts its kernels down on SIGTERM
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
