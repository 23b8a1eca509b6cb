"""The Plotly Dash dashboard (live signals, performance, quality, universe, health). Filled by issue 6."""
