"""Background work that lives in the database (design principle 7): queue, worker, scheduler, GC."""
