"""The writes, by domain: each module owns one kind of row and what changes it. Callers import
the domain module (`from steering.services import profiles`); there is no hub here.

- vector_sets: dimensions and vector sets, their computation and uploads
- evaluations: the paper's evaluation of a vector set's dimension
- jobs: the life of a background job (queued, running, ready or failed)
- profiles: strengths and their history; SELECT's and CALIBRATE's writes
- feedback: feedback on answers; LEARN's writes
- chat: resolving a chat turn and logging it (the turn itself: steering.chat.turn)
- gguf: vector sets as GGUF control vectors, out and in
- health: whether the site can answer
"""
