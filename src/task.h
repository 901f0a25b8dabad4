/*
 * Layer 7, tasks (task.c, local.c): a coroutine and its future, names,
 * awaiting, the loop's list of live tasks, and task-local values.
 */
#ifndef CIO_TASK_H
#define CIO_TASK_H

#include "future.h"

typedef struct cio__locals cio__locals;

typedef struct cio__task {
    struct cio_future fut; /* must be first: a task is a future */
    cio__coro co;          /* what the wait primitive knows of it */
    cio_task_fn fn;
    void *arg;
    char *name;            /* NULL until asked for or set */
    uint64_t id;
    size_t stack_size;
    struct cio__task *all_next, *all_prev; /* loop's list of live tasks */
    cio__locals *locals;
} cio__task;

extern const cio__future_ops cio__task_ops;

/* The task f is, or NULL for other futures. */
static inline cio__task *cio__as_task(cio_future_t *f)
{
    return (f && f->ops == &cio__task_ops) ? (cio__task *)f : NULL;
}

/* The task the coroutine c belongs to (every coroutine is a task's). */
static inline cio__task *cio__task_of(cio__coro *c)
{
    return cio__container_of(c, cio__task, co);
}

/* Suspends the current coroutine until f is done, uninterruptibly. */
void cio__await_done(cio_future_t *f);

/* Task-local storage helpers (local.c). */
cio__locals *cio__locals_ref(cio__locals *l);
void cio__locals_unref(cio__locals *l);

#endif /* CIO_TASK_H */
