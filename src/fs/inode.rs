//! The inode table: directories by prefix, files by (blob name, ETag), so one inode is one
//! blob version. A changed blob gets a new inode at the next listing; the old one lives on
//! while the kernel or an open handle still refers to it.

use super::names::{posix_name, Hidden};
use crate::storage::{BlobMeta, DirListing};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

#[derive(Debug)]
pub struct FileNode {
    pub meta: BlobMeta,
    /// xxh3_128 of the content, once known (metadata, download, or hashing on demand).
    pub digest: OnceLock<crate::digest::Xxh3Digest>,
}

#[derive(Debug)]
pub struct DirNode {
    /// Full blob-name prefix, empty or ending in `/`.
    pub prefix: String,
    pub children: Option<Children>,
}

#[derive(Debug, Clone)]
pub struct Children {
    pub fetched: Instant,
    /// Known to be out of date (a blob in it changed): list again at the next access.
    pub stale: bool,
    pub entries: BTreeMap<String, Ino>,
    pub subdirs: u32,
}

#[derive(Debug)]
pub enum NodeKind {
    Dir(DirNode),
    File(Arc<FileNode>),
}

#[derive(Debug)]
pub struct Node {
    pub parent: Ino,
    /// Name in the parent directory.
    pub name: String,
    pub kind: NodeKind,
    /// Kernel references (lookup count), released by forget.
    pub lookups: u64,
    /// Open file handles.
    pub opens: u64,
}

impl Node {
    /// A directory not listed yet, with no kernel references or handles.
    fn dir(parent: Ino, name: &str, prefix: &str) -> Self {
        Node {
            parent,
            name: name.to_string(),
            kind: NodeKind::Dir(DirNode {
                prefix: prefix.to_string(),
                children: None,
            }),
            lookups: 0,
            opens: 0,
        }
    }
}

#[derive(Debug)]
pub struct InodeTable {
    nodes: HashMap<Ino, Node>,
    files: HashMap<(String, String), Ino>,
    dirs: HashMap<String, Ino>,
    next: Ino,
    /// Names already warned about, so a refresh does not repeat the warning.
    warned: HashSet<String>,
}

impl InodeTable {
    pub fn new(root_prefix: &str) -> Self {
        let mut table = Self {
            nodes: HashMap::new(),
            files: HashMap::new(),
            dirs: HashMap::new(),
            next: ROOT_INO + 1,
            warned: HashSet::new(),
        };
        // The kernel holds the root from mount to unmount: one lookup that is never forgotten.
        let mut root = Node::dir(ROOT_INO, "", root_prefix);
        root.lookups = 1;
        table.nodes.insert(ROOT_INO, root);
        table.dirs.insert(root_prefix.to_string(), ROOT_INO);
        table
    }

    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: Ino) -> Option<&mut Node> {
        self.nodes.get_mut(&ino)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Replaces a directory's children with a fresh listing.
    pub fn apply_listing(&mut self, dir: Ino, listing: DirListing, now: Instant) {
        let Some(prefix) = self.dir_prefix(dir) else {
            return;
        };
        let mut entries = BTreeMap::new();
        let mut subdirs = 0;
        // ADLS Gen2 directory markers (zero-length, `hdi_isfolder=true`) are directories,
        // childless ones included; one with children is also listed as a prefix.
        let (markers, files): (Vec<BlobMeta>, Vec<BlobMeta>) =
            listing.files.into_iter().partition(is_folder_marker);
        let marker_dirs = markers.into_iter().map(|m| format!("{}/", m.name));
        for sub in &listing
            .dirs
            .into_iter()
            .chain(marker_dirs)
            .collect::<Vec<_>>()
        {
            let relative = &sub[prefix.len()..];
            let segment = relative.strip_suffix('/').unwrap_or(relative);
            let name = match posix_name(segment) {
                Ok(name) => name.to_string(),
                Err(why) => {
                    self.warn_hidden(sub, why);
                    continue;
                }
            };
            if entries.contains_key(&name) {
                continue;
            }
            let ino = self.dir_ino(sub, dir, &name);
            entries.insert(name, ino);
            subdirs += 1;
        }
        for meta in files {
            let segment = &meta.name[prefix.len()..];
            if segment.is_empty() {
                // A marker blob named exactly like the directory ("dir/"): nothing to show.
                continue;
            }
            let name = match posix_name(segment) {
                Ok(name) => name.to_string(),
                Err(why) => {
                    self.warn_hidden(&meta.name, why);
                    continue;
                }
            };
            if entries.contains_key(&name) {
                self.warn_once(&meta.name, || {
                    tracing::warn!(blob = %meta.name, "hidden: a directory of the same name shadows this blob")
                });
                continue;
            }
            let ino = self.file_ino(meta, dir, &name);
            entries.insert(name, ino);
        }
        let mut dropped = Vec::new();
        if let Some(Node {
            kind: NodeKind::Dir(d),
            ..
        }) = self.nodes.get_mut(&dir)
        {
            if let Some(old) = d.children.take() {
                dropped.extend(
                    old.entries
                        .into_iter()
                        .filter(|(name, ino)| entries.get(name) != Some(ino))
                        .map(|(_, ino)| ino),
                );
            }
            d.children = Some(Children {
                fetched: now,
                stale: false,
                entries,
                subdirs,
            });
        }
        // Entries that left the listing (replaced versions, deleted blobs) go now unless
        // the kernel or an open handle still refers to them; forget/release finish the rest.
        for ino in dropped {
            self.remove_if_unused(ino);
        }
    }

    /// Marks a directory's listing out of date, so the next lookup lists it again.
    pub fn invalidate(&mut self, dir: Ino) {
        if let Some(Node {
            kind: NodeKind::Dir(DirNode {
                children: Some(c), ..
            }),
            ..
        }) = self.nodes.get_mut(&dir)
        {
            c.stale = true;
        }
    }

    fn dir_prefix(&self, dir: Ino) -> Option<String> {
        match &self.nodes.get(&dir)?.kind {
            NodeKind::Dir(d) => Some(d.prefix.clone()),
            NodeKind::File(_) => None,
        }
    }

    fn dir_ino(&mut self, prefix: &str, parent: Ino, name: &str) -> Ino {
        if let Some(&ino) = self.dirs.get(prefix) {
            return ino;
        }
        let ino = self.allocate(Node::dir(parent, name, prefix));
        self.dirs.insert(prefix.to_string(), ino);
        ino
    }

    fn file_ino(&mut self, meta: BlobMeta, parent: Ino, name: &str) -> Ino {
        let key = (meta.name.clone(), meta.etag.clone());
        if let Some(&ino) = self.files.get(&key) {
            return ino;
        }
        let digest = OnceLock::new();
        if let Ok(Some(d)) = meta.xxh3() {
            let _ = digest.set(d);
        }
        let ino = self.allocate(Node {
            parent,
            name: name.to_string(),
            kind: NodeKind::File(Arc::new(FileNode { meta, digest })),
            lookups: 0,
            opens: 0,
        });
        self.files.insert(key, ino);
        ino
    }

    fn allocate(&mut self, node: Node) -> Ino {
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, node);
        ino
    }

    /// Drops kernel references; a node nobody refers to any more (no lookups, no open
    /// handles, no longer in its directory's current listing) is removed.
    pub fn forget(&mut self, ino: Ino, n: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
        }
        self.remove_if_unused(ino);
    }

    pub fn remove_if_unused(&mut self, ino: Ino) {
        if ino == ROOT_INO {
            return;
        }
        let Some(node) = self.nodes.get(&ino) else {
            return;
        };
        if node.lookups > 0 || node.opens > 0 || self.is_current(ino, node.parent, &node.name) {
            return;
        }
        if let Some(node) = self.nodes.remove(&ino) {
            match node.kind {
                NodeKind::File(f) => {
                    self.files
                        .remove(&(f.meta.name.clone(), f.meta.etag.clone()));
                }
                NodeKind::Dir(d) => {
                    self.dirs.remove(&d.prefix);
                    // Its subtree is unreachable now: drop what nobody else holds.
                    for child in d.children.into_iter().flat_map(|c| c.entries.into_values()) {
                        self.remove_if_unused(child);
                    }
                }
            }
        }
    }

    fn is_current(&self, ino: Ino, parent: Ino, name: &str) -> bool {
        match self.nodes.get(&parent).map(|p| &p.kind) {
            Some(NodeKind::Dir(DirNode {
                children: Some(c), ..
            })) => c.entries.get(name) == Some(&ino),
            _ => false,
        }
    }

    fn warn_hidden(&mut self, blob: &str, why: Hidden) {
        self.warn_once(
            blob,
            || tracing::warn!(blob = %blob, reason = %why, "hidden: not a valid file name"),
        );
    }

    fn warn_once(&mut self, blob: &str, warn: impl FnOnce()) {
        if self.warned.insert(blob.to_string()) {
            warn();
        }
    }
}

/// Hierarchical-namespace accounts, Hadoop/ABFS, Storage Explorer and azcopy write each
/// directory as an empty marker blob with `hdi_isfolder=true`.
pub fn is_folder_marker(meta: &BlobMeta) -> bool {
    meta.size == 0
        && meta
            .metadata
            .get("hdi_isfolder")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn meta(name: String) -> BlobMeta {
        BlobMeta {
            name,
            size: 1,
            last_modified: std::time::SystemTime::UNIX_EPOCH,
            etag: "\"e\"".into(),
            content_md5: None,
            metadata: Default::default(),
        }
    }

    proptest! {
        /// Whatever names a listing returns, the directory shows only names a POSIX
        /// filesystem can hold, and never panics.
        #[test]
        fn listings_only_ever_show_valid_names(
            files in proptest::collection::vec("(\\.|\\.\\.|[a-z\\\\/\u{1}]{0,8}|x{250,300})", 0..20),
            dirs in proptest::collection::vec("(\\.|\\.\\.|[a-z/]{0,6}|y{250,300})", 0..10),
        ) {
            let mut table = InodeTable::new("p/");
            let listing = DirListing {
                files: files.into_iter().map(|f| meta(format!("p/{f}"))).filter(|m| !m.name[2..].contains('/')).collect(),
                dirs: dirs.into_iter().map(|d| format!("p/{d}/")).filter(|d| !d[2..d.len() - 1].contains('/')).collect(),
            };
            table.apply_listing(ROOT_INO, listing, Instant::now());
            let Some(NodeKind::Dir(DirNode { children: Some(c), .. })) = table.get(ROOT_INO).map(|n| &n.kind) else {
                panic!("root lost its listing");
            };
            for name in c.entries.keys() {
                prop_assert!(!name.is_empty() && name != "." && name != "..");
                prop_assert!(!name.contains('/') && !name.contains('\0') && name.len() <= 255);
            }
        }
    }
}
