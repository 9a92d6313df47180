//! The rows of a directory as the kernel reads them, for both `readdir` and `readdirplus`:
//! `.` and `..` first, then the entries; each row's offset cookie is its index + 1, so a
//! read resuming at offset `n` starts at row `n` (fuser's readdir offset idiom).

use crate::fs::{Attr, DirEntry, Ino, Kind};

/// One row. `attr` is `None` where it is not known (a dot entry whose inode could not be
/// read); `readdirplus` skips such rows, `readdir` does not need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    pub ino: Ino,
    /// The offset of the row after this one.
    pub next_offset: u64,
    pub name: &'a str,
    pub kind: Kind,
    pub attr: Option<Attr>,
    /// `.` or `..`: handing it out does not count as a lookup.
    pub is_dot: bool,
}

/// The dot rows: the directory itself and its parent, with their attributes if known.
pub type Dots = [(Ino, Option<Attr>); 2];

/// Every row from `offset` on.
pub fn rows<'a>(dots: Dots, entries: &'a [DirEntry], offset: u64) -> impl Iterator<Item = Row<'a>> {
    let dot_rows = dots
        .into_iter()
        .zip([".", ".."])
        .map(|((ino, attr), name)| Row {
            ino,
            next_offset: 0,
            name,
            kind: Kind::Dir,
            attr,
            is_dot: true,
        });
    let entry_rows = entries.iter().map(|e| Row {
        ino: e.attr.ino,
        next_offset: 0,
        name: e.name.as_str(),
        kind: e.attr.kind,
        attr: Some(e.attr),
        is_dot: false,
    });
    dot_rows
        .chain(entry_rows)
        .enumerate()
        .map(|(i, row)| Row {
            next_offset: i as u64 + 1,
            ..row
        })
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn attr(ino: Ino, kind: Kind) -> Attr {
        Attr {
            ino,
            kind,
            size: 0,
            blocks: 0,
            mtime: SystemTime::UNIX_EPOCH,
            perm: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
        }
    }

    fn entries() -> Vec<DirEntry> {
        ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, n)| DirEntry {
                name: n.to_string(),
                attr: attr(10 + i as u64, Kind::File),
            })
            .collect()
    }

    #[test]
    fn offsets_resume_where_the_last_read_stopped() {
        let entries = entries();
        let dots = [(5, Some(attr(5, Kind::Dir))), (1, Some(attr(1, Kind::Dir)))];
        let names = |offset| {
            rows(dots, &entries, offset)
                .map(|r| (r.name, r.next_offset))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(0),
            [(".", 1), ("..", 2), ("a", 3), ("b", 4), ("c", 5)]
        );
        assert_eq!(names(1), [("..", 2), ("a", 3), ("b", 4), ("c", 5)]);
        assert_eq!(names(3), [("b", 4), ("c", 5)]);
        assert!(names(5).is_empty());
        assert!(names(u64::MAX).is_empty());
    }

    /// The old readdirplus stopped at a dot entry without attributes and then computed
    /// `index - 2` from an index below 2: a panic in debug builds, an empty listing in
    /// release. Rows without attributes are now skippable one by one.
    #[test]
    fn dot_rows_without_attributes_do_not_hide_the_entries() {
        let entries = entries();
        for dots in [
            [(5, None), (1, None)],
            [(5, Some(attr(5, Kind::Dir))), (1, None)],
        ] {
            for offset in [0, 1] {
                let plus: Vec<_> = rows(dots, &entries, offset)
                    .filter(|r| r.attr.is_some())
                    .map(|r| (r.name, r.next_offset, r.is_dot))
                    .collect();
                let real: Vec<_> = plus.iter().filter(|r| !r.2).cloned().collect();
                assert_eq!(
                    real,
                    [("a", 3, false), ("b", 4, false), ("c", 5, false)],
                    "{dots:?} from {offset}"
                );
            }
        }
    }
}
