"""A real corpus fixture with one document of each supported format, made by project code.

Every document holds at least one element of each kind its format supports, and the HTML and
Markdown documents hold a chart (``figure.chart`` / an image titled "chart"): parser v1 reads
it as a paragraph (its caption), parser v2 as content type ``chart``. ``broken.pdf`` is a
truncated PDF that no parser can read: it must end in the rejected list with its reason.
"""

from __future__ import annotations

import io
from typing import Any

HTML = """<!doctype html><html><head><title>Serving guide</title></head><body>
<h1>Serving open-weight models</h1>
<p>vLLM serves the model behind an OpenAI-compatible API. Each replica holds the weights in GPU memory.</p>
<ul><li>Pin the runtime image by digest.</li><li>Verify the weight digest before serving.</li></ul>
<pre>vllm serve /models/tiny-chat --dtype float32</pre>
<table><tr><th>class</th><th>gpus</th></tr><tr><td>h100x1</td><td>1</td></tr><tr><td>b200x4</td><td>4</td></tr></table>
<figure class="chart"><img src="latency.png" alt="bar chart">
<figcaption>Chart: p99 latency per hardware class</figcaption></figure>
</body></html>
"""

MARKDOWN = """# Canary releases

A canary takes a small share of traffic before the new model is promoted.

- Start at five percent.
- Roll back at the failure limit.

```bash
airflow dags trigger model_refresh
```

| step | weight |
|------|--------|
| 1    | 5      |
| 2    | 25     |

![Error rate per canary step](error-rate.png "chart")
"""

TEXT = """Corpus re-ingestion runs on a schedule and whenever the parser changes.

Every source document yields chunks or is listed as rejected with its reason.
"""


def pdf_bytes() -> bytes:
    """A two-page PDF with text (fpdf2)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for page_text in ("Evaluation gates compare each category with the champion.\n\n"
                      "A drop beyond the threshold blocks the release.",
                      "Latency gates use the p99 time to first token of each hardware class."):
        pdf.add_page()
        pdf.multi_cell(0, 8, page_text)
    return bytes(pdf.output())


def docx_bytes() -> bytes:
    """A DOCX with a heading, paragraphs, a list and a table (python-docx)."""
    import docx

    document = docx.Document()
    document.add_heading("Rollback runbook", level=1)
    document.add_paragraph("Rolling back moves the champion alias to the previous version in one step.")
    document.add_paragraph("Open the model_rollback DAG.", style="List Bullet")
    document.add_paragraph("Trigger it with the model name.", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    for row, values in zip(table.rows, (("alias", "version"), ("champion", "7")), strict=True):
        for cell, value in zip(row.cells, values, strict=True):
            cell.text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def broken_pdf_bytes() -> bytes:
    """The first bytes of a real PDF: a header and nothing a reader can use."""
    return pdf_bytes()[:120]


def fixture_documents() -> dict[str, bytes]:
    """Relative path -> bytes of every fixture document."""
    return {
        "guides/serving.html": HTML.encode(),
        "guides/canary.md": MARKDOWN.encode(),
        "notes/reingest.txt": TEXT.encode(),
        "papers/gates.pdf": pdf_bytes(),
        "runbooks/rollback.docx": docx_bytes(),
        "papers/broken.pdf": broken_pdf_bytes(),
    }


def upload_fixture(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Upload the fixture documents under ``s3://bucket/prefix``; return their keys."""
    prefix = prefix.rstrip("/") + "/"
    keys = []
    for relative, data in fixture_documents().items():
        s3.put_object(Bucket=bucket, Key=prefix + relative, Body=data)
        keys.append(prefix + relative)
    return keys
