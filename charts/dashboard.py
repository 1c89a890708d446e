#!/usr/bin/env python3
"""Loads a Grafana dashboard JSON as Grafana's own typed dashboard model
(PyPI's grafana-foundation-sdk) and prints every panel query's PromQL as a
JSON list. Exits 1 naming the panel when the model does not hold: a panel
without a grid position of integers, a query that is not a Prometheus
query, an empty expression, or no data source variable.

    dashboard.py FILE
"""

import json
import sys

try:
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import dashboard as dm
    from grafana_foundation_sdk.models import prometheus as prom
except ImportError as e:  # pragma: no cover - a clear message for a missing tool
    sys.exit(f"dashboard.py needs grafana-foundation-sdk: {e}")


def panels(dashboard):
    # A collapsed row holds its panels; an expanded row's follow it.
    for panel in dashboard.panels or []:
        if isinstance(panel, dm.RowPanel):
            yield from panel.panels or []
        else:
            yield panel


def main() -> int:
    # Without the plugins every query decodes as an unknown one.
    register_default_plugins()
    with open(sys.argv[1]) as f:
        dashboard = dm.Dashboard.from_json(json.load(f))
    problems, exprs = [], []
    if not isinstance(dashboard.title, str) or not dashboard.title:
        problems.append("the dashboard has no title")
    variables = [v.name for v in (dashboard.templating.list_val or []) if v.type_val == "datasource"]
    if "datasource" not in variables:
        problems.append("no `datasource` variable")
    count = 0
    for panel in panels(dashboard):
        count += 1
        where = f"panel {panel.title!r}"
        grid = panel.grid_pos
        if not isinstance(grid, dm.GridPos) or not all(
            isinstance(v, int) for v in (grid.h, grid.w, grid.x, grid.y)
        ):
            problems.append(f"{where}: no grid position of integers")
        elif grid.x + grid.w > 24:
            problems.append(f"{where}: wider than the 24 columns")
        if not panel.targets:
            problems.append(f"{where}: no query")
        for target in panel.targets or []:
            if not isinstance(target, prom.Dataquery):
                problems.append(f"{where}: {type(target).__name__} is not a Prometheus query")
            elif not isinstance(target.expr, str) or not target.expr.strip():
                problems.append(f"{where}: query {target.ref_id} has no expression")
            else:
                exprs.append(target.expr)
    if count == 0:
        problems.append("no panels")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(json.dumps(exprs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
