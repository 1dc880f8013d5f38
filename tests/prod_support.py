"""Helpers for the production tests: a private redis-server run with the project's own redis.conf
and ACL file (rendered by deploy/redis/render-acl.sh), TLS certificates made on the spot, and
a parser for Prometheus text.  Every server is on a free loopback port in a temporary folder.
"""
from __future__ import annotations

import datetime
import ipaddress
import secrets as _secrets
import subprocess
from pathlib import Path

import redis

from tests.support import ROOT, RedisServer, harness_client

DEPLOY = ROOT / "deploy"
REDIS_CONF = DEPLOY / "redis" / "redis.conf"
ACL_TEMPLATE = DEPLOY / "redis" / "users.acl"
RENDER_ACL = DEPLOY / "redis" / "render-acl.sh"
USERS = ("admin", "operator", "trader", "generator.g1", "generator.g2", "generator.g3", "strategy.X", "strategy.Y")


def make_secrets(folder: Path, users=USERS) -> dict[str, str]:
    """A random password per user, one file each (as deploy/make-secrets.sh does)."""
    folder.mkdir(parents=True, exist_ok=True)
    pw = {}
    for u in users:
        pw[u] = "pw-" + _secrets.token_urlsafe(18)
        (folder / u).write_text(pw[u] + "\n")
        (folder / u).chmod(0o600)
    return pw


def render_acl(template: Path, secrets_dir: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(RENDER_ACL), str(template), str(secrets_dir), str(out)],
                          capture_output=True, text=True, timeout=30)


class ConfRedis(RedisServer):
    """redis-server started with deploy/redis/redis.conf (overridden only where a test must:
    port, bind, dir, log file, no AOF) plus ``extra`` arguments; clients log in as ``admin``."""

    def __init__(self, workdir: Path, admin_password: str | None = None, extra: list[str] | None = None,
                 tls: dict | None = None, binary: str | None = None):
        super().__init__(workdir, extra=extra, binary=binary)
        self.admin_password = admin_password
        self.tls = tls or {}

    def args(self) -> list[str]:
        return [self.binary, str(REDIS_CONF), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"), "--appendonly", "no",
                "--save", "", *self.extra]

    def client(self, **kw) -> redis.Redis:
        if self.admin_password:
            kw.setdefault("username", "admin")
            kw.setdefault("password", self.admin_password)
        kw.update({k: v for k, v in self.tls.items() if k not in kw})
        return harness_client(self.port, **kw)

    def url_for(self, user: str | None = None, password: str | None = None, scheme: str = "redis") -> str:
        auth = ""
        if user:
            auth = user + (f":{password}" if password else "") + "@"
        elif password:
            auth = f":{password}@"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"


def acl_server(tmp_path: Path, template: Path = ACL_TEMPLATE, binary: str | None = None,
               extra: list[str] | None = None) -> tuple[ConfRedis, dict[str, str]]:
    """A redis-server (or ``binary``) with the project's redis.conf and ACL file (or ``template``,
    rendered into tmp_path/users.acl), and the users' passwords."""
    pw = make_secrets(tmp_path / "secrets")
    out = tmp_path / "users.acl"
    r = render_acl(template, tmp_path / "secrets", out)
    assert r.returncode == 0, r.stderr
    server = ConfRedis(tmp_path / "redis", admin_password=pw["admin"], extra=["--aclfile", str(out), *(extra or [])],
                       binary=binary).start()
    return server, pw


# -- TLS -------------------------------------------------------------------------------------
def make_tls(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(k, path):
        path.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        path.chmod(0o600)

    def cert(subject, pub, issuer, issuer_key, ca=False, san=None, usage=None):
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
             .public_key(pub).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                              content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False,
                                              encipher_only=False, decipher_only=False), critical=True)
        return b.sign(issuer_key, hashes.SHA256())

    files = {}
    for prefix in ("ca", "other-ca"):
        k = key()
        c = cert(f"redismedian test {prefix}", k.public_key(), f"redismedian test {prefix}", k, ca=True)
        files[prefix] = folder / f"{prefix}.crt"
        files[prefix].write_bytes(c.public_bytes(serialization.Encoding.PEM))
        files[prefix + "-key"] = k
    ca_key = files.pop("ca-key")
    files.pop("other-ca-key")
    ca_name = "redismedian test ca"
    sk = key()
    sc = cert("127.0.0.1", sk.public_key(), ca_name, ca_key,
              san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
              usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    ck = key()
    cc = cert("redismedian client", ck.public_key(), ca_name, ca_key, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    for stem, c, k in (("server", sc, sk), ("client", cc, ck)):
        files[stem] = folder / f"{stem}.crt"
        files[stem].write_bytes(c.public_bytes(serialization.Encoding.PEM))
        files[stem + "-key"] = folder / f"{stem}.key"
        write_key(k, files[stem + "-key"])
    return files


# -- Prometheus text ------------------------------------------------------------------------
def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, frozenset of label items): value} from the Prometheus text format."""
    from prometheus_client.parser import text_string_to_metric_families
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(metrics: dict, metric: str, **labels) -> float | None:
    """The value of the one sample called ``metric`` whose labels include ``labels``."""
    found = [v for (n, ls), v in metrics.items() if n == metric and set(labels.items()) <= set(ls)]
    if len(found) > 1:
        raise AssertionError(f"{len(found)} samples of {metric} match {labels}")
    return found[0] if found else None
