"""The HTTP floor: a FastAPI endpoint on the create path that parses the JSON body and answers
201 with a small JSON envelope, served exactly like `payouts api` (uvicorn, uvloop, httptools,
no access log). Run as `python -m bench.trivial_app --port N`."""

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.responses import Response

app = FastAPI()


@app.post("/api/v1/payouts", status_code=201)
async def accept(body: dict[str, Any]) -> Response:
    return Response(
        content=b'{"success":true,"data":{"id":"00000000-0000-0000-0000-000000000000"}}',
        status_code=201,
        media_type="application/json",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        "bench.trivial_app:app",
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
