"""--dtype on a network read from a checkpoint: MXNet's symbols cast the input to float16 right after `data` (in
place of their identity `id`) and cast the classifier's output back to float32 before the softmax, so that one
graph edit turns a saved network of either precision into the other."""
from __future__ import annotations

import json

from mxlaunch.errors import UsageError

SOFTMAX = "SoftmaxOutput"


def _input_layer(nodes) -> dict:
    """The node right after `data`: MXNet's `id` (float32) or its float16 Cast."""
    data = next((i for i, n in enumerate(nodes) if n["op"] == "null" and n["name"] == "data"), None)
    for node in nodes:
        if node["op"] in ("identity", "_copy", "Cast") and [e[0] for e in node["inputs"]] == [data]:
            return node
    return {}


def with_dtype(symbol, dtype: str, source: str):
    """`symbol` computing in `dtype` (float32 or float16); `source` names where it came from (for the error)."""
    import mxnet as mx  # heavy

    graph = json.loads(symbol.tojson())
    nodes = graph["nodes"]
    first = _input_layer(nodes)
    if not first:
        if dtype == "float32":
            return symbol
        raise UsageError(f"--dtype {dtype}: the network of {source} has no input layer to cast (MXNet's symbols "
                         f"have `id` after `data`)")
    if first["op"] == "Cast" and dtype == "float16" or first["op"] != "Cast" and dtype == "float32":
        return symbol
    first.update({"op": "Cast", "name": "cast0", "attrs": {"dtype": "float16"}} if dtype == "float16"
                 else {"op": "identity", "name": "id", "attrs": {}})
    for node in nodes:
        if node["op"] != SOFTMAX:
            continue
        entry = node["inputs"][0]
        feeding = nodes[entry[0]]
        if dtype == "float32" and feeding["op"] == "Cast":
            node["inputs"][0] = feeding["inputs"][0]  # the cast stays in the list, unused: the loader drops it
        elif dtype == "float16" and feeding["op"] != "Cast":
            nodes.append({"op": "Cast", "name": f"{feeding['name']}_float32", "attrs": {"dtype": "float32"},
                          "inputs": [entry]})
            node["inputs"][0] = [len(nodes) - 1, 0, 0]
    return _reordered(mx, graph)


def _reordered(mx, graph: dict):
    """A graph whose nodes may be out of topological order (an appended cast), loaded through a symbol that
    rebuilds it in order."""
    loaded = mx.sym.load_json(json.dumps(_topological(graph)))
    return mx.sym.load_json(loaded.tojson())


def _topological(graph: dict) -> dict:
    nodes, order, seen = graph["nodes"], [], {}

    def visit(i):
        if i in seen:
            return
        seen[i] = None
        for entry in nodes[i]["inputs"]:
            visit(entry[0])
        seen[i] = len(order)
        order.append(i)

    for head in graph["heads"]:
        visit(head[0])
    renumber = {old: new for new, old in enumerate(order)}
    out = []
    for old in order:
        node = dict(nodes[old])
        node["inputs"] = [[renumber[e[0]]] + list(e[1:]) for e in node["inputs"]]
        out.append(node)
    return {"nodes": out, "arg_nodes": [i for i, n in enumerate(out) if n["op"] == "null"],
            "heads": [[renumber[h[0]]] + list(h[1:]) for h in graph["heads"]],
            "attrs": graph.get("attrs", {})}
