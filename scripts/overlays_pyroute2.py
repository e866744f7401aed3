#!/usr/bin/env python3
"""The peer of `wuos bench overlays`: the same SD-WAN ops (a JSON list written by the bench, the
serde form of wuos_sdwan::Op) carried out with pyroute2 — the netlink library EveryWAN's edge uses
— in the calling network namespace, one request at a time as pyroute2's IPRoute does. Prints one
JSON object: seconds (wall, around the ops only: imports and the JSON load excluded), cpu_seconds
(this process's user + system time over the same span) and rss_bytes (after)."""
import json
import resource
import subprocess
import sys
import time

from pyroute2 import IPRoute


def mac(b):
    return ":".join(f"{x:02x}" for x in b)


def main():
    ops = json.load(open(sys.argv[1]))
    ipr = IPRoute()
    index = {}

    def idx(name):
        if name not in index:
            found = ipr.link_lookup(ifname=name)
            if not found:
                raise RuntimeError(f"no interface {name}")
            index[name] = found[0]
        return index[name]

    def rule_args(r):
        a = dict(priority=r["priority"], table=r["table"])
        sel = r["selector"]
        if "fwmark" in sel:
            a["fwmark"] = sel["fwmark"]
        else:
            a["iifname"] = sel["iif"]
        return a

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for op in ops:
        (kind, v), = op.items() if isinstance(op, dict) else [(op, None)]
        if kind == "create_tunnel":
            ipr.link("add", ifname=v["name"], kind="vxlan", vxlan_id=v["vni"], vxlan_local=v["local"],
                     vxlan_link=idx(v["dev"]), vxlan_port=4789, vxlan_learning=0, mtu=v["mtu"],
                     address=mac(v["mac"]))
            i = idx(v["name"])
            ipr.addr("add", index=i, address=v["inner"], prefixlen=24)
            ipr.link("set", index=i, state="up")
        elif kind == "delete_tunnel":
            ipr.link("del", index=idx(v["name"]))
            index.pop(v["name"], None)
        elif kind == "add_peer":
            i, p = idx(v["tunnel"]), v["peer"]
            ipr.fdb("append", ifindex=i, lladdr=mac(p["mac"]), dst=p["remote"])
            ipr.neigh("replace", ifindex=i, dst=p["inner"], lladdr=mac(p["mac"]), state=128)
        elif kind == "remove_peer":
            i, p = idx(v["tunnel"]), v["peer"]
            ipr.fdb("del", ifindex=i, lladdr=mac(p["mac"]), dst=p["remote"])
            ipr.neigh("del", ifindex=i, dst=p["inner"], lladdr=mac(p["mac"]))
        elif kind in ("add_route", "delete_route"):
            d, l = v["dst"]
            ipr.route("replace" if kind == "add_route" else "del", dst=f"{d}/{l}", gateway=v["via"],
                      oif=idx(v["dev"]), table=v["table"], proto=201)
        elif kind in ("add_rule", "delete_rule"):
            ipr.rule("add" if kind == "add_rule" else "del", **rule_args(v))
        elif kind == "replace_nft":
            subprocess.run(["nft", "-f", "-"], input=v.encode(), check=True)
        elif kind == "delete_nft":
            subprocess.run(["nft", "delete", "table", "ip", "wuos_sdwan"], check=True)
        else:
            raise RuntimeError(f"unknown op {kind}")
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "seconds": t1 - t0,
        "cpu_seconds": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
        "rss_bytes": r1.ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()
