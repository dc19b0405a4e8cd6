"""Worker-side code: RQ job functions by area, and the worker process set-up.

jobs/ imports portal's services; portal never imports jobs/."""
