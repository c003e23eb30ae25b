"""The channels a step's messages travel by (cluster/transport.py picks among them):

    (the interface, StepChannel (open, send, receive, close) and a worker's end: core/steps.py)
    wire.py       the reply's layout, the socket framing, the answers
    unix.py       `unix`: the step file (step_file.py) and a Unix socket per worker, one node
    tcp.py        `tcp`: one TCP link per node (links.py), relayed by a worker (relay.py)
    ray_calls.py  `ray`: an actor call per worker, the vectors inline or in the object store
"""
