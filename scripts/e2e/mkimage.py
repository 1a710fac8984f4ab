#!/usr/bin/env python3
"""mkimage.py ROOTFS_DIR OUT.tar NAME:TAG [--entrypoint JSON] [--cmd JSON] [--user U] [--env K=V]... [--workdir D]
Writes a docker-archive tarball (manifest.json + config + one uncompressed layer) that
`ctr -n k8s.io images import OUT.tar` accepts. Owners are forced to 0:0 unless --keep-owners."""
import argparse, hashlib, io, json, os, tarfile, tempfile

p = argparse.ArgumentParser()
p.add_argument("rootfs"); p.add_argument("out"); p.add_argument("ref")
p.add_argument("--entrypoint", default=None); p.add_argument("--cmd", default=None)
p.add_argument("--user", default=""); p.add_argument("--env", action="append", default=[])
p.add_argument("--workdir", default="/"); p.add_argument("--keep-owners", action="store_true")
a = p.parse_args()

def norm(ti):
    if not a.keep_owners:
        ti.uid = ti.gid = 0; ti.uname = ti.gname = ""
    ti.mtime = 0                       # reproducible digests
    return ti

with tempfile.TemporaryDirectory() as td:
    layer = os.path.join(td, "layer.tar")
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(os.listdir(a.rootfs)):     # no "./" prefix entries
            t.add(os.path.join(a.rootfs, name), arcname=name, filter=norm)
    h = hashlib.sha256()
    with open(layer, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""): h.update(chunk)
    diff_id = "sha256:" + h.hexdigest()
    cfg = {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Env": a.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "WorkingDir": a.workdir, "User": a.user,
                   **({"Entrypoint": json.loads(a.entrypoint)} if a.entrypoint else {}),
                   **({"Cmd": json.loads(a.cmd)} if a.cmd else {})},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "mkimage.py"}],
    }
    cfg_bytes = json.dumps(cfg, separators=(",", ":")).encode()
    cfg_name = hashlib.sha256(cfg_bytes).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [a.ref],
                            "Layers": [diff_id[7:] + "/layer.tar"]}]).encode()
    with tarfile.open(a.out, "w") as out:
        def addbytes(name, data):
            ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o644
            out.addfile(ti, io.BytesIO(data))
        addbytes(cfg_name, cfg_bytes)
        out.add(layer, arcname=diff_id[7:] + "/layer.tar", filter=norm)
        addbytes("manifest.json", manifest)
print(a.out, a.ref, diff_id)
