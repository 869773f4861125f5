"""Running jobs: the runner (runner.py), the API calls (render.py), relax mode (relax.py), the result
buttons (actions.py) and the plain outcomes shown to people (outcomes.py)."""
