"""The engineer's notebook runs from top to bottom on the real pipeline, and is committed without outputs."""

import nbformat
from nbclient import NotebookClient

import model

NOTEBOOK = model.ROOT / "notebooks" / "explore.ipynb"


def test_the_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") and not cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code")


def test_the_notebook_runs_and_shows_each_part():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    assert "[EMAIL]" in text and "75983714" in text  # the steps alone
    assert "application/vnd.plotly.v1+json" in {k for o in outputs for k in o.get("data", {})}  # the embedding space
    assert "'accuracy'" in text and "predicted" in text  # the evaluation
    assert "open" in text  # the edge cases still open
