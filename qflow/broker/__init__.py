"""The Celery edge: the app factory, the one generic task, the dispatcher, worker and
Flower glue. The only package that imports Celery."""
