"""`tether sim m365`: run the Microsoft 365 simulator on its own (for demos and manual tests)."""

from __future__ import annotations

from typing import Annotated

import typer

from tether.cli._common import out

sim_app = typer.Typer(help="Local simulators of upstream systems.", no_args_is_help=True)


@sim_app.command("m365")
def m365(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8765,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    domain: Annotated[str, typer.Option(help="Tenant domain.")] = "contoso.example",
    seed: Annotated[int, typer.Option(help="Seed of the generated organisation.")] = 7,
    client_id: Annotated[str, typer.Option(help="OAuth client registered in the tenant.")] = "tether-gateway",
    client_secret: Annotated[
        str, typer.Option(envvar="TETHER_SIM_CLIENT_SECRET", help="That client's secret.")
    ] = "sim-gateway-secret",  # noqa: S107 — the simulator's demo client
    token_format: Annotated[str, typer.Option(help="opaque or jwt access tokens.")] = "opaque",  # noqa: S107 — a format name
) -> None:
    """Serve a Graph v1.0–shaped tenant with its own OAuth token endpoint, seeded deterministically."""
    import uvicorn

    from tether.sim.m365 import M365Sim, create_app

    sim = M365Sim(tenant_domain=domain, seed=seed, clients={client_id: client_secret}, token_format=token_format)
    out.print(f"Microsoft 365 simulator for {domain} on http://{host}:{port}/v1.0 (token endpoint: "
              f"/{domain}/oauth2/v2.0/token, client {client_id})", highlight=False)  # fmt: skip
    uvicorn.run(create_app(sim), host=host, port=port, log_level="warning", access_log=False)


__all__ = ["sim_app"]
