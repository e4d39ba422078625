"""Data access, one module per resource. Functions take a Session and leave committing to the caller.

Owner isolation lives in `scoping`: every owner-facing get/list goes through it, so another owner's
object is simply not found. Worker-facing functions (claim, heartbeat, append) take a job id the
worker already holds a lease on.
"""
