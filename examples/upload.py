"""File uploads with a progress bar.

    microasgi run examples.upload:app        # then open http://127.0.0.1:8000

The page posts the chosen file with XMLHttpRequest, whose ``upload.onprogress`` drives the
progress bar; the handler answers with the file's name, size and SHA-256. The file is
parsed as it streams in and spools to disk past 1 MiB, so even a large upload keeps the
server's memory flat.
"""

from __future__ import annotations

import hashlib
from typing import Any

from microasgi import App, HTMLResponse, HTTPException, Limits, Request, UploadFile

MiB = 1024 * 1024
GiB = 1024 * MiB

app = App()


@app.get("/")
async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


@app.get("/ping")
async def ping(request: Request) -> str:
    return "pong"


# --8<-- [start:upload]
# The app's 10 MiB body limit is lifted for this route only, and a form may carry one file.
@app.post("/upload", limits=Limits(max_body_size=4 * GiB, max_files=1))
async def upload(request: Request) -> dict[str, Any]:
    async with request.form() as form:  # the file is closed when the block ends
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise HTTPException(400, 'Send the file in a form field named "file"')
        digest = hashlib.sha256()
        while chunk := await file.read(MiB):  # from disk in a worker thread once spooled
            digest.update(chunk)
        return {"filename": file.filename, "size": file.size, "sha256": digest.hexdigest()}


# --8<-- [end:upload]

PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>microasgi uploads</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; }
  progress { width: 100%; height: 1.5rem; }
  pre { background: #f4f4f4; padding: 1rem; overflow-x: auto; }
</style>
<h1>Upload a file</h1>
<form id="form">
  <input type="file" name="file" required>
  <button>Upload</button>
</form>
<p><progress id="progress" max="1" value="0"></progress></p>
<p id="status">Choose a file.</p>
<pre id="result" hidden></pre>
<script>
  const form = document.getElementById("form");
  const progress = document.getElementById("progress");
  const status = document.getElementById("status");
  const result = document.getElementById("result");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const xhr = new XMLHttpRequest();
    const started = performance.now();
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      progress.value = e.loaded / e.total;
      const seconds = (performance.now() - started) / 1000;
      const mib = e.loaded / 1048576;
      status.textContent = `${(100 * e.loaded / e.total).toFixed(1)} % ` +
        `(${mib.toFixed(1)} MiB, ${(mib / Math.max(seconds, 0.001)).toFixed(1)} MiB/s)`;
    };
    xhr.upload.onload = () => { status.textContent = "Uploaded; hashing on the server..."; };
    xhr.onload = () => {
      status.textContent = xhr.status === 200 ? "Done." : `Error ${xhr.status}`;
      result.textContent = JSON.stringify(JSON.parse(xhr.responseText), null, 2);
      result.hidden = false;
    };
    xhr.onerror = () => { status.textContent = "The upload failed."; };
    xhr.open("POST", "/upload");
    xhr.send(new FormData(form));
  });
</script>
</html>
"""
