//! A small ISO 9660 writer with Joliet names, enough for a config drive: a few
//! directories and files, read-only, built in memory. The primary tree carries ISO 9660
//! level 2 names (upper case, `;1` versions); the Joliet tree (a supplementary volume
//! descriptor, UCS-2 names) carries the names as given, which is what Linux mounts and
//! what cloud-init reads (`openstack/latest/meta_data.json`). Both trees share the files'
//! extents. Layout (2048-byte sectors): 16 empty, the primary, Joliet and terminating
//! volume descriptors, four path tables (little- and big-endian for each tree), the
//! directories of each tree, then the files.

use std::collections::BTreeMap;

const SECTOR: usize = 2048;

/// One tree node: a directory's children by name, or a file's index in the input.
enum Node {
    Dir(BTreeMap<String, Node>),
    File(usize),
}

/// A directory, in path-table order, with where its records and children live.
struct Dir {
    /// Names from the root (empty for the root).
    path: Vec<String>,
    /// Path-table number of the parent (1-based; the root is its own parent).
    parent: u16,
    /// Sector of this directory's extent, per tree (primary, Joliet), and its length.
    extent: [u32; 2],
    len: [u32; 2],
}

/// Which tree a record is written for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tree {
    Primary = 0,
    Joliet = 1,
}

fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

/// A name as the tree stores it.
fn ident(name: &str, dir: bool, tree: Tree) -> Vec<u8> {
    match tree {
        Tree::Joliet => name
            .chars()
            .take(64)
            .flat_map(|c| {
                let c = if (c as u32) < 0x10000 {
                    c as u16
                } else {
                    b'_' as u16
                };
                c.to_be_bytes()
            })
            .collect(),
        Tree::Primary => {
            let mut s: String = name
                .chars()
                .map(|c| match c.to_ascii_uppercase() {
                    c @ ('A'..='Z' | '0'..='9' | '_' | '.') => c,
                    _ => '_',
                })
                .collect();
            s.truncate(30);
            if !dir {
                if !s.contains('.') {
                    s.push('.');
                }
                s.push_str(";1");
            }
            s.into_bytes()
        }
    }
}

/// A directory record (ECMA-119 9.1) for an extent; `id` already encoded.
fn record(id: &[u8], extent: u32, len: u32, dir: bool) -> Vec<u8> {
    let mut r = vec![0u8; 33];
    r[2..10].copy_from_slice(&both32(extent));
    r[10..18].copy_from_slice(&both32(len));
    // Recorded 2026-01-01 00:00:00 UTC, fixed: the same input gives the same image.
    r[18..25].copy_from_slice(&[126, 1, 1, 0, 0, 0, 0]);
    r[25] = if dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = id.len() as u8;
    r.extend_from_slice(id);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r[0] = r.len() as u8;
    r
}

/// Lays records out in sectors: a record never crosses a sector boundary.
fn pack(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let used = out.len() % SECTOR;
        if used + r.len() > SECTOR {
            out.resize(out.len() + SECTOR - used, 0);
        }
        out.extend_from_slice(r);
    }
    out.resize(out.len().div_ceil(SECTOR).max(1) * SECTOR, 0);
    out
}

fn pad_str(field: &mut [u8], s: &str, tree: Tree) {
    match tree {
        Tree::Primary => {
            field.fill(b' ');
            let b = s.as_bytes();
            let n = b.len().min(field.len());
            field[..n].copy_from_slice(&b[..n]);
        }
        Tree::Joliet => {
            for pair in field.chunks_exact_mut(2) {
                pair.copy_from_slice(&[0, b' ']);
            }
            for (i, c) in s.encode_utf16().take(field.len() / 2).enumerate() {
                field[2 * i..2 * i + 2].copy_from_slice(&c.to_be_bytes());
            }
        }
    }
}

/// Builds an image holding `files` (paths with `/`, relative to the root) under the
/// volume label `label`. Paths must not be empty, nor name both a file and a directory.
pub fn build(label: &str, files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let mut root = BTreeMap::new();
    for (i, (path, _)) in files.iter().enumerate() {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, dirs)) = parts.split_last() else {
            return Err(format!("empty path {path:?}"));
        };
        let mut at = &mut root;
        for d in dirs {
            let next = at
                .entry(d.to_string())
                .or_insert_with(|| Node::Dir(BTreeMap::new()));
            at = match next {
                Node::Dir(m) => m,
                Node::File(_) => return Err(format!("{path}: {d} is a file")),
            };
        }
        if at.insert(last.to_string(), Node::File(i)).is_some() {
            return Err(format!(
                "{path} given twice, or both a file and a directory"
            ));
        }
    }
    // Directories in path-table order: by level, then parent, then name.
    let mut dirs = vec![Dir {
        path: vec![],
        parent: 1,
        extent: [0; 2],
        len: [0; 2],
    }];
    let mut i = 0;
    while i < dirs.len() {
        let here = lookup(&root, &dirs[i].path);
        for (name, node) in here {
            if let Node::Dir(_) = node {
                let mut path = dirs[i].path.clone();
                path.push(name.clone());
                dirs.push(Dir {
                    path,
                    parent: (i + 1) as u16,
                    extent: [0; 2],
                    len: [0; 2],
                });
            }
        }
        i += 1;
    }
    // Sectors: 16 system area, 3 descriptors, 4 path tables (one sector each is enough
    // for the few directories a config drive has), then directories, then files.
    let mut next = 16 + 3 + 4;
    for tree in [Tree::Primary, Tree::Joliet] {
        for d in dirs.iter_mut() {
            let here = lookup(&root, &d.path);
            // The size does not depend on extents: lay out with placeholders.
            let recs = dir_records(here, &[0; 2], tree, &|_| (0, 0));
            let len = pack(&recs).len();
            d.extent[tree as usize] = next as u32;
            d.len[tree as usize] = len as u32;
            next += len / SECTOR;
        }
    }
    let mut file_at = vec![0u32; files.len()];
    for (i, (_, data)) in files.iter().enumerate() {
        file_at[i] = next as u32;
        next += data.len().div_ceil(SECTOR);
    }
    let total = next;
    let mut img = vec![0u8; total * SECTOR];
    let dir_no = |path: &[String]| dirs.iter().position(|d| d.path == path);
    for tree in [Tree::Primary, Tree::Joliet] {
        let t = tree as usize;
        // Path tables: L then M.
        let mut pt = Vec::new();
        for d in &dirs {
            let id = match d.path.last() {
                Some(name) => ident(name, true, tree),
                None => vec![0],
            };
            pt.push((id, d.extent[t], d.parent));
        }
        let table = |le: bool| {
            let mut out = Vec::new();
            for (id, extent, parent) in &pt {
                out.push(id.len() as u8);
                out.push(0);
                if le {
                    out.extend_from_slice(&extent.to_le_bytes());
                    out.extend_from_slice(&parent.to_le_bytes());
                } else {
                    out.extend_from_slice(&extent.to_be_bytes());
                    out.extend_from_slice(&parent.to_be_bytes());
                }
                out.extend_from_slice(id);
                if id.len() % 2 == 1 {
                    out.push(0);
                }
            }
            out
        };
        let (l, m) = (table(true), table(false));
        if l.len() > SECTOR {
            return Err("too many directories for one path-table sector".into());
        }
        let l_at = 19 + 2 * t;
        img[l_at * SECTOR..l_at * SECTOR + l.len()].copy_from_slice(&l);
        img[(l_at + 1) * SECTOR..(l_at + 1) * SECTOR + m.len()].copy_from_slice(&m);
        // Directory extents.
        for d in &dirs {
            let here = lookup(&root, &d.path);
            let parent = &dirs[d.parent as usize - 1];
            let child = |name: &str| -> (u32, u32) {
                let mut p = d.path.clone();
                p.push(name.to_string());
                match here.get(name) {
                    Some(Node::File(i)) => (file_at[*i], files[*i].1.len() as u32),
                    _ => dir_no(&p).map_or((0, 0), |k| (dirs[k].extent[t], dirs[k].len[t])),
                }
            };
            let mut recs = dir_records(here, &[d.extent[t], d.len[t]], tree, &child);
            // "." and ".." first: the parent's extent goes in "..".
            recs[1] = record(&[1], parent.extent[t], parent.len[t], true);
            let bytes = pack(&recs);
            let at = d.extent[t] as usize * SECTOR;
            img[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        // Volume descriptor.
        let vd = &mut img[(16 + t) * SECTOR..(17 + t) * SECTOR];
        vd[0] = if tree == Tree::Primary { 1 } else { 2 };
        vd[1..6].copy_from_slice(b"CD001");
        vd[6] = 1;
        pad_str(&mut vd[8..40], "LINUX", tree);
        pad_str(&mut vd[40..72], label, tree);
        vd[80..88].copy_from_slice(&both32(total as u32));
        if tree == Tree::Joliet {
            vd[88..91].copy_from_slice(b"%/E"); // UCS-2 level 3
        }
        vd[120..124].copy_from_slice(&both16(1));
        vd[124..128].copy_from_slice(&both16(1));
        vd[128..132].copy_from_slice(&both16(SECTOR as u16));
        vd[132..140].copy_from_slice(&both32(l.len() as u32));
        vd[140..144].copy_from_slice(&(l_at as u32).to_le_bytes());
        vd[148..152].copy_from_slice(&((l_at + 1) as u32).to_be_bytes());
        let root_rec = record(&[0], dirs[0].extent[t], dirs[0].len[t], true);
        vd[156..190].copy_from_slice(&root_rec[..34]);
        for field in [
            190..318,
            318..446,
            446..574,
            574..702,
            702..739,
            739..776,
            776..813,
        ] {
            pad_str(&mut vd[field], "", tree);
        }
        for date in [813..830, 830..847, 847..864, 864..881] {
            vd[date.start..date.end - 1].fill(b'0');
        }
        vd[881] = 1;
    }
    let term = &mut img[18 * SECTOR..19 * SECTOR];
    term[0] = 255;
    term[1..6].copy_from_slice(b"CD001");
    term[6] = 1;
    for (i, (_, data)) in files.iter().enumerate() {
        let at = file_at[i] as usize * SECTOR;
        img[at..at + data.len()].copy_from_slice(data);
    }
    Ok(img)
}

fn lookup<'a>(root: &'a BTreeMap<String, Node>, path: &[String]) -> &'a BTreeMap<String, Node> {
    let mut at = root;
    for p in path {
        if let Some(Node::Dir(m)) = at.get(p) {
            at = m;
        }
    }
    at
}

/// The records of one directory: ".", "..", then its children sorted by their encoded
/// names; `place` gives a child's extent and length.
fn dir_records(
    here: &BTreeMap<String, Node>,
    me: &[u32; 2],
    tree: Tree,
    place: &dyn Fn(&str) -> (u32, u32),
) -> Vec<Vec<u8>> {
    let mut out = vec![record(&[0], me[0], me[1], true), record(&[1], 0, 0, true)];
    let mut kids: Vec<(Vec<u8>, &String, bool)> = here
        .iter()
        .map(|(name, node)| {
            let dir = matches!(node, Node::Dir(_));
            (ident(name, dir, tree), name, dir)
        })
        .collect();
    kids.sort();
    for (id, name, dir) in kids {
        let (extent, len) = place(name);
        out.push(record(&id, extent, len, dir));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            (
                "openstack/latest/meta_data.json".into(),
                br#"{"uuid": "x"}"#.to_vec(),
            ),
            ("openstack/latest/user_data".into(), vec![b'u'; 5000]),
            ("openstack/content/0000".into(), b"key".to_vec()),
        ]
    }

    #[test]
    fn the_image_has_its_label_and_descriptors_and_is_reproducible() {
        let img = build("config-2", &files()).unwrap();
        assert_eq!(img.len() % SECTOR, 0);
        assert_eq!(&img[16 * SECTOR + 1..16 * SECTOR + 6], b"CD001");
        assert_eq!(img[16 * SECTOR], 1);
        assert_eq!(img[17 * SECTOR], 2);
        assert_eq!(img[18 * SECTOR], 255);
        assert_eq!(&img[16 * SECTOR + 40..16 * SECTOR + 48], b"config-2");
        assert_eq!(img, build("config-2", &files()).unwrap());
        assert!(build("x", &[("a".into(), vec![]), ("a/b".into(), vec![])]).is_err());
    }

    /// Independent readers: blkid names the label, and xorriso (Debian package xorriso,
    /// which scripts/install-deps.sh installs) extracts the files under their names.
    #[test]
    fn other_readers_find_the_label_and_the_files_by_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let iso = dir.path().join("cd.iso");
        std::fs::write(&iso, build("config-2", &files()).unwrap()).unwrap();
        let label = std::process::Command::new("blkid")
            .args(["-p", "-o", "value", "-s", "LABEL"])
            .arg(&iso)
            .output()
            .expect("blkid (util-linux)");
        assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "config-2");
        let out = dir.path().join("out");
        let o = std::process::Command::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(&iso)
            .args(["-extract", "/"])
            .arg(&out)
            .output()
            .expect("xorriso is not installed (scripts/install-deps.sh installs it)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for (path, data) in files() {
            assert_eq!(
                std::fs::read(out.join(&path)).unwrap_or_default(),
                data,
                "{path}"
            );
        }
    }
}
