"""The one plotly template of the dashboard: Binance yellow on a dark background."""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

YELLOW = "#F0B90B"
UP = "#0ECB81"
DOWN = "#F6465D"
BACKGROUND = "#0B0E11"
PANEL = "#161A1E"
GRID = "#2B3139"
TEXT = "#EAECEF"
MUTED = "#848E9C"
# Yellow leads so the primary series of every chart is Binance yellow.
# For values centred on zero (correlations): red below, yellow above.
DIVERGING = [[0, DOWN], [0.5, PANEL], [1, YELLOW]]
COLORWAY = [YELLOW, "#1E90FF", UP, DOWN, "#B47CFF", "#FF8C00", "#00CED1", MUTED]
TEMPLATE_NAME = "binance"


def _template() -> go.layout.Template:
    axis = {
        "gridcolor": GRID,
        "zerolinecolor": GRID,
        "linecolor": GRID,
        "color": MUTED,
        "automargin": True,
    }
    return go.layout.Template(
        layout={
            "paper_bgcolor": BACKGROUND,
            "plot_bgcolor": PANEL,
            "font": {"color": TEXT, "family": "IBM Plex Sans, Arial, sans-serif"},
            "colorway": COLORWAY,
            "xaxis": axis,
            "yaxis": axis,
            # Top right, clear of the x-axis title and of the chart title on the left.
            "legend": {
                "bgcolor": "rgba(0,0,0,0)",
                "orientation": "h",
                "x": 1,
                "xanchor": "right",
                "y": 1.02,
                "yanchor": "bottom",
            },
            "margin": {"l": 40, "r": 20, "t": 96, "b": 40},
            "hovermode": "x unified",
            "colorscale": {"sequential": [[0, BACKGROUND], [0.5, "#7A5C05"], [1, YELLOW]]},
        },
        data={
            "candlestick": [
                go.Candlestick(
                    increasing={"line": {"color": UP}, "fillcolor": UP},
                    decreasing={"line": {"color": DOWN}, "fillcolor": DOWN},
                )
            ],
            # No colour here: it would override the colorway for every series of a stacked bar.
            "bar": [go.Bar(marker={"line": {"width": 0}})],
        },
    )


pio.templates[TEMPLATE_NAME] = _template()
# plotly express copies the default template's colours into each trace when it builds a figure,
# so the default must be ours too, not only the template applied afterwards.
pio.templates.default = TEMPLATE_NAME


def styled(figure: go.Figure, title: str | None = None, height: int = 420) -> go.Figure:
    """Apply the dashboard template (every chart goes through here)."""
    figure.update_layout(template=TEMPLATE_NAME, height=height)
    if title:
        # The title sits at the very top and the legend just above the plot, so they never overlap.
        figure.update_layout(
            title={
                "text": title,
                "x": 0,
                "xref": "paper",
                "y": 1,
                "yref": "container",
                "yanchor": "top",
                "pad": {"t": 8},
                "font": {"size": 16},
            }
        )
    return figure
