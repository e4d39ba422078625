"""What the queue-position queries cost PostgreSQL per job GET with many jobs queued.

    .venv/bin/python bench/queue_position_cost.py [--queued 4000] [--gets 200]

A fresh PostgreSQL database with `--queued` queued jobs (bench/api.py leaves thousands queued after
its create phases); each figure is the mean time of one statement over `--gets` job ids, run
side by side in one session: the positions statement (`row_number()` over every queued job), the
queue-pace statement, a count of the queued jobs ahead (an alternative, not in use), and a
primary-key SELECT for scale. Prints only; the figures are quoted in profile_job_get.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.service_common import postgres_database
from store.db import session_scope
from store.models import File, Job, Owner, utcnow
from store.repositories import jobs

WINDOW = text("SELECT id, position FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS position "
              "FROM jobs WHERE status = 'queued') ranked WHERE id = :job_id")  # before migration 0006
BY_ID = text("SELECT id FROM jobs WHERE id = :job_id")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queued", type=int, default=4000)
    parser.add_argument("--gets", type=int, default=200)
    args = parser.parse_args()
    config = {"method": "finetune", "training": {"seed": 0, "batch_size": 8, "epochs": 1, "lr": 1e-4}}
    with postgres_database() as url:
        with session_scope(url) as session:
            owner = Owner(name="bench")
            session.add(owner)
            session.flush()
            file = File(owner_id=owner.id, filename="x.npz", purpose="fine-tune", bytes=1, sha256="0" * 64,
                        status="processed")
            session.add(file)
            session.flush()
            session.add_all([Job(owner_id=owner.id, model="tiny-bert", method="finetune", config=config,
                                 training_file_id=file.id) for _ in range(args.queued)])
        with session_scope(url) as session:
            ids = list(session.scalars(text("SELECT id FROM jobs ORDER BY random() LIMIT :n"), {"n": args.gets}))
            statements = {"positions (count ahead, (status, created_at, id) index)":
                          lambda i: session.execute(jobs.POSITIONS, {"job_ids": [i]}),
                          "positions before 0006 (row_number over the queue)":
                          lambda i: session.execute(WINDOW, {"job_id": i}),
                          "queue pace": lambda i: session.execute(jobs.PACE, {"live_since": utcnow()}),
                          "primary-key SELECT": lambda i: session.execute(BY_ID, {"job_id": i})}
            for round_no in (1, 2):
                for name, run in statements.items():
                    start = time.perf_counter()
                    for job_id in ids:
                        run(job_id).all()
                    print(f"round {round_no}: {name}: {(time.perf_counter() - start) / len(ids) * 1000:.2f} ms "
                          f"per GET ({args.queued} queued)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
