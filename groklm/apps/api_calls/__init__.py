"""Calling APIs from their documentation (the Gorilla recipe): a catalog of APIs, the pages a
retriever finds for a request, training chats that end in the right call, and the measure of
calls on APIs the model never trained on.

    catalog.py     Api / Param / Catalog: schema, documentation page, request templates; the JSON file
    synthetic.py   the built-in set: 62 APIs, 10 of them held out of training
    dataset.py     splits, the documentation index and its retriever, training chats
    evaluate.py    call accuracy, wrong API, hallucinated API, with and without retrieval
    build.py       `groklm apis make`: a whole data directory, written atomically
"""
