"""The classic way, for comparison only: a plain FastAPI app that calls model.run once per request.

python bench/plain_fastapi.py PORT
"""

import sys
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import model
from app.api import TriageRequest
from building import builder


@asynccontextmanager
async def lifespan(_: FastAPI):
    builder.ready()  # load before /health answers
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/health")
def health() -> str:
    return "ok"


@app.post("/predict")
def predict(request: TriageRequest) -> model.Triage:  # a sync endpoint: FastAPI runs it in its thread pool
    return model.run(model.Ticket.model_validate(request.model_dump(exclude={"flags"})), request.flags)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
