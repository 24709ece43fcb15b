"""Token service benchmark: exchanges/s and offline verifications/s beside bare Ed25519 sign/verify.

    python bench/tokens.py [--quick] [--postgres ADMIN_URL]

With `--postgres` it creates a scratch database next to ADMIN_URL's and drops it after.

Prints a table, then as its LAST line one JSON object with `verify_cold_ratio` (first
verification of a token ÷ a bare Ed25519 verify), `verify_cached_us` (a token seen before,
revocation still checked) and `exchange_p50_ms` (a full token exchange: client assertion,
subject token, identity reads, one write transaction with the task and two audit events).
Goals on SQLite: ≤ 1.3, ≤ 10 µs, ≤ 5 ms.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.tokens_world import assertion, idp_token, make_world, request, write_trusted_issuers

from tether.api.wiring import build_services
from tether.config import Settings
from tether.types import new_id


def per_op_us(fn, n: int, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer iterations (< 60 s)")
    ap.add_argument("--postgres", default=None, help="PostgreSQL admin URL; default: SQLite in a temp directory")
    args = ap.parse_args()
    if args.postgres:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = f"tether_bench_{secrets.token_hex(4)}"
        admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            run(args.quick, make_url(args.postgres).set(database=name).render_as_string(hide_password=False))
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    else:
        run(args.quick, None)


def run(quick: bool, database_url: str | None) -> None:
    n_sig = 2000 if quick else 20000
    n_cached = 20000 if quick else 200000
    n_exchange = 200 if quick else 1000

    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    settings = Settings(data_dir=tmp / "data", database_url=database_url,
                        trusted_issuers=write_trusted_issuers(tmp / "conf"))  # fmt: skip
    svc = build_services(settings, migrate=True)
    watcher = svc.extras["revocation_watcher"]
    watcher.start()
    try:
        assert svc.verifier is not None
        assert svc.tokens is not None
        verifier, tokens = svc.verifier, svc.tokens
        w = make_world(svc)
        aud = verifier.resource_url("mcp")

        # a realistic token, and the bare signature costs on its signing input
        sample = tokens.exchange(request(w, idp_token(w.person_subject)))["access_token"]
        h, p, _ = sample.split(".")
        signing_input = f"{h}.{p}".encode()
        key = Ed25519PrivateKey.generate()
        pub = key.public_key()
        sig = key.sign(signing_input)
        bare_sign = per_op_us(lambda: key.sign(signing_input), n_sig)
        bare_verify = per_op_us(lambda: pub.verify(sig, signing_input), n_sig)

        # cold verification: every token new to the verifier (distinct jti → distinct digest)
        now = int(time.time())
        base = {"iss": settings.issuer, "sub": w.person, "act": {"sub": w.agent_a}, "client_id": w.agent_a,
                "aud": aud, "scope": "mail:read mail:send", "task_id": new_id("tsk"), "iat": now, "nbf": now,
                "exp": now + 300, "dlg": w.dlg_a}  # fmt: skip
        # Interleave short blocks of bare and cold verification and keep each one's best block, so
        # load from other processes on this shared machine hits both sides alike.
        block, rounds = 100, max(10, n_sig // 100)
        fresh = [tokens.keyring.sign({**base, "jti": new_id("tok")}, "at+jwt") for _ in range(block * rounds)]
        it = iter(fresh)
        cold = bare_verify_il = float("inf")
        for _ in range(rounds):
            bare_verify_il = min(bare_verify_il, per_op_us(lambda: pub.verify(sig, signing_input), block, repeat=1))
            cold = min(cold, per_op_us(lambda: verifier.verify(next(it), audience=aud), block, repeat=1))
        bare_verify = min(bare_verify, bare_verify_il)
        verifier.verify(sample, audience=aud)
        cached = per_op_us(lambda: verifier.verify(sample, audience=aud), n_cached)
        mint = per_op_us(lambda: tokens.keyring.sign({**base, "jti": "x"}, "at+jwt"), n_sig)

        # full exchanges (client assertion + IdP token prepared outside the timing)
        reqs = [request(w, idp_token(w.person_subject),
                        client_assertion=assertion(w.agent_a, w.key_a, settings.issuer)) for _ in range(n_exchange)]  # fmt: skip
        times = []
        t_all = time.perf_counter()
        for r in reqs:
            t0 = time.perf_counter()
            tokens.exchange(r)
            times.append((time.perf_counter() - t0) * 1000)
        total = time.perf_counter() - t_all
        p50 = statistics.median(times)
        p95 = sorted(times)[int(len(times) * 0.95) - 1]
    finally:
        watcher.stop()
        svc.close()

    backend = "sqlite" if settings.is_sqlite else "postgresql"
    rows = [
        ("bare Ed25519 sign", f"{bare_sign:.1f} µs", f"{1e6 / bare_sign:,.0f}/s"),
        ("bare Ed25519 verify", f"{bare_verify:.1f} µs", f"{1e6 / bare_verify:,.0f}/s"),
        ("mint task token (sign + JSON)", f"{mint:.1f} µs", f"{mint / bare_sign:.2f}× bare sign"),
        ("verify, first sight (cold)", f"{cold:.1f} µs", f"{cold / bare_verify:.2f}× bare verify"),
        ("verify, cached by digest", f"{cached:.2f} µs", f"{1e6 / cached:,.0f}/s"),
        (f"exchange p50 ({backend})", f"{p50:.2f} ms", f"p95 {p95:.2f} ms"),
        ("exchanges/s (sequential)", f"{n_exchange / total:,.0f}/s", ""),
    ]
    print(f"{'measure':34} {'cost':>14} {'':>22}")
    for name, a, b in rows:
        print(f"{name:34} {a:>14} {b:>22}")
    print(json.dumps({
        "backend": backend, "bare_sign_us": round(bare_sign, 2), "bare_verify_us": round(bare_verify, 2),
        "verify_cold_us": round(cold, 2), "verify_cold_ratio": round(cold / bare_verify, 3),
        "verify_cached_us": round(cached, 3), "verifications_per_s_cached": round(1e6 / cached),
        "verifications_per_s_cold": round(1e6 / cold), "exchange_p50_ms": round(p50, 3),
        "exchange_p95_ms": round(p95, 3), "exchanges_per_s": round(n_exchange / total, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
