//! Segment files, the store's log: the records of each commit group are appended to the
//! generation's current file, `gen-<id>/segments/<n>.log`, as a group header followed by frames
//! `[length: u32 LE][record]`; sled keeps only where they are. [`scan`] reads the log back from a
//! position, whole groups only: a group that does not check out can only be one cut short by a
//! crash (never acknowledged), and every open starts a new file, so it is never written over.
//! A file is closed at `segment_bytes` and deleted once all its records are delivered.
//!
//! The writer writes zeros ahead of its end ([`ZEROED_AHEAD`]), as PostgreSQL does with its
//! WAL: a commit group's `fdatasync` then overwrites blocks the file already has, and needs no
//! new blocks and no new file size to be written and waited for as well. The scan reads a
//! zeroed tail as the end of the log.

use super::record::RecordError;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Bytes before each record in a segment: its length.
pub const FRAME_HEADER: u64 = 4;
/// Bytes of a group header: `[GROUP_MAGIC: u32][first seq: u64][count: u32][frames length:
/// u64][crc32 of the frames: u32][crc32 of the header before it: u32]`, all LE.
pub const GROUP_HEADER: u64 = 32;
const GROUP_MAGIC: u32 = 0xFEED_0B0C;

/// Where a chunk's frames are: a byte range of one segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
}

impl Location {
    const ENCODED_LEN: usize = 24;

    /// `[segment][offset][len]`, each u64 LE.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.segment.to_le_bytes());
        out[8..16].copy_from_slice(&self.offset.to_le_bytes());
        out[16..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Location> {
        if bytes.len() != Self::ENCODED_LEN {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Some(Location {
            segment: word(0),
            offset: word(8),
            len: word(16),
        })
    }

    /// The first byte after the range.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// Appends `record` to `out` as one frame.
pub fn frame_into(out: &mut Vec<u8>, record: &[u8]) {
    out.extend_from_slice(&(record.len() as u32).to_le_bytes());
    out.extend_from_slice(record);
}

/// Bytes a record of `len` bytes takes in a segment.
pub fn framed_len(len: u32) -> u64 {
    FRAME_HEADER + u64::from(len)
}

/// The records of a chunk's frames, cut by the lengths its metadata holds (sled's copy is the
/// one trusted; each record then checks its own checksum). A record past the end is `Truncated`.
pub fn records<'a>(frames: &'a [u8], lengths: &[u32]) -> Vec<Result<&'a [u8], RecordError>> {
    let mut at = 0usize;
    lengths
        .iter()
        .map(|len| {
            let start = at + FRAME_HEADER as usize;
            let end = start + *len as usize;
            at = end;
            frames
                .get(start..end)
                .ok_or(RecordError::Truncated(frames.len()))
        })
        .collect()
}

/// The record lengths the frames themselves declare, for rebuilding lost chunk metadata.
pub fn lengths_of(frames: &[u8]) -> Result<Vec<u32>, RecordError> {
    let mut lengths = Vec::new();
    let mut at = 0usize;
    while at < frames.len() {
        let header = frames
            .get(at..at + FRAME_HEADER as usize)
            .ok_or(RecordError::Truncated(frames.len()))?;
        let len = u32::from_le_bytes(header.try_into().expect("4 bytes"));
        at += FRAME_HEADER as usize + len as usize;
        if at > frames.len() {
            return Err(RecordError::Truncated(frames.len()));
        }
        lengths.push(len);
    }
    Ok(lengths)
}

/// Starts a group's bytes: a header to be filled in by [`seal_group`], then frames.
pub fn begin_group(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0; GROUP_HEADER as usize]);
}

/// Fills in the header of the group `out` holds (begun with [`begin_group`]).
pub fn seal_group(out: &mut [u8], first_seq: u64, count: u32) {
    let frames = &out[GROUP_HEADER as usize..];
    let mut header = [0u8; GROUP_HEADER as usize];
    header[0..4].copy_from_slice(&GROUP_MAGIC.to_le_bytes());
    header[4..12].copy_from_slice(&first_seq.to_le_bytes());
    header[12..16].copy_from_slice(&count.to_le_bytes());
    header[16..24].copy_from_slice(&(frames.len() as u64).to_le_bytes());
    header[24..28].copy_from_slice(&crc32fast::hash(frames).to_le_bytes());
    let crc = crc32fast::hash(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    out[..GROUP_HEADER as usize].copy_from_slice(&header);
}

/// A group found in the log by [`scan`].
#[derive(Debug, PartialEq, Eq)]
pub struct ScannedGroup {
    pub first_seq: u64,
    /// Where its frames are.
    pub frames: Location,
    pub lengths: Vec<u32>,
    /// The frames themselves.
    pub bytes: Vec<u8>,
}

/// Reads the log of the segment files in `dir` from position `from` (segment, offset): every
/// whole group, in order, up to the first that is cut short or does not check out. Returns the
/// groups and how many bytes after them were left unread (not counting the zeros at the end).
pub fn scan(dir: &Path, from: (u64, u64)) -> io::Result<(Vec<ScannedGroup>, u64)> {
    let mut ids: Vec<u64> = segment_ids(dir)?
        .into_iter()
        .filter(|id| *id >= from.0)
        .collect();
    ids.sort_unstable();
    let mut groups = Vec::new();
    for id in ids {
        // Only what lies after `from` is read: a segment file can be large.
        let start = if id == from.0 { from.1 } else { 0 };
        let mut file = File::open(path_of(dir, id))?;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)?;
        let mut at = 0;
        while let Some(group) = parse_group(&bytes, at, id, start) {
            at = (group.frames.end() - start) as usize;
            groups.push(group);
        }
        // Zeros written ahead and never overwritten are no group: the log goes on in the next
        // file. Anything else is a group torn by a crash, and nothing after it was
        // acknowledged: the log ends there.
        let written = bytes
            .iter()
            .rposition(|b| *b != 0)
            .map_or(0, |last| last + 1);
        if at < written {
            return Ok((groups, (written - at) as u64));
        }
    }
    Ok((groups, 0))
}

/// The group at `at` of `bytes`, which were read from offset `base` of segment `segment`.
fn parse_group(bytes: &[u8], at: usize, segment: u64, base: u64) -> Option<ScannedGroup> {
    let header = bytes.get(at..at.checked_add(GROUP_HEADER as usize)?)?;
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let long = |i: usize| u64::from_le_bytes(header[i..i + 8].try_into().expect("8 bytes"));
    if word(0) != GROUP_MAGIC || word(28) != crc32fast::hash(&header[..28]) {
        return None;
    }
    let start = at + GROUP_HEADER as usize;
    let frames = bytes.get(start..start.checked_add(usize::try_from(long(16)).ok()?)?)?;
    if crc32fast::hash(frames) != word(24) {
        return None;
    }
    let lengths = lengths_of(frames).ok()?;
    if lengths.len() != word(12) as usize {
        return None;
    }
    Some(ScannedGroup {
        first_seq: long(4),
        frames: Location {
            segment,
            offset: base + start as u64,
            len: frames.len() as u64,
        },
        lengths,
        bytes: frames.to_vec(),
    })
}

pub fn path_of(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:06}.log"))
}

/// The segment numbers present in `dir`.
pub fn segment_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// How far past the records' end the writer keeps the file written with zeros: the file grows
/// (and a sync writes its metadata) once per this many bytes of records; the zeros count in the
/// store's disk use.
pub const ZEROED_AHEAD: u64 = 256 * 1024;

/// The committer's end of the newest segment file of the active generation.
pub struct SegmentWriter {
    id: u64,
    file: File,
    end: u64,
    /// The file's length: zeros from `end` up to it.
    zeroed: u64,
}

impl SegmentWriter {
    /// Starts a new segment file in `dir`, numbered after every one there, and makes its name
    /// durable.
    pub fn create(dir: &Path) -> io::Result<SegmentWriter> {
        let id = segment_ids(dir)?.into_iter().max().unwrap_or(0) + 1;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path_of(dir, id))?;
        super::durable::sync_dir(dir)?;
        Ok(SegmentWriter {
            id,
            file,
            end: 0,
            zeroed: 0,
        })
    }

    /// Where the next appended bytes will be.
    pub fn position(&self) -> (u64, u64) {
        (self.id, self.end)
    }

    /// Appends `bytes` (not yet durable: see [`SegmentWriter::sync`]) and returns where they are.
    /// Past [`ZEROED_AHEAD`] bytes of zeros it writes the next ones behind them.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<Location> {
        self.file.write_all_at(bytes, self.end)?;
        let location = Location {
            segment: self.id,
            offset: self.end,
            len: bytes.len() as u64,
        };
        self.end += bytes.len() as u64;
        if self.end > self.zeroed {
            let target = (self.end / ZEROED_AHEAD + 1) * ZEROED_AHEAD;
            let zeros = vec![0u8; (target - self.end) as usize];
            self.file.write_all_at(&zeros, self.end)?;
            self.zeroed = target;
        }
        Ok(location)
    }

    /// `fdatasync` of what was appended.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// Reads chunks from a generation's segment files, keeping each file open once it was read.
pub struct SegmentReader {
    dir: PathBuf,
    files: Mutex<HashMap<u64, Arc<File>>>,
}

impl SegmentReader {
    pub fn new(dir: PathBuf) -> SegmentReader {
        SegmentReader {
            dir,
            files: Mutex::new(HashMap::new()),
        }
    }

    /// The directory of the segment files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes segment file `segment` (every record in it is delivered).
    pub fn remove(&self, segment: u64) -> io::Result<()> {
        self.files
            .lock()
            .expect("segment files lock")
            .remove(&segment);
        std::fs::remove_file(path_of(&self.dir, segment))
    }

    /// The bytes at `location`. A range beyond the file's end is `UnexpectedEof`.
    pub fn read(&self, location: &Location) -> io::Result<Vec<u8>> {
        if location.len == 0 {
            return Ok(Vec::new());
        }
        let file = self.file(location.segment)?;
        let mut bytes = vec![0; location.len as usize];
        file.read_exact_at(&mut bytes, location.offset)?;
        Ok(bytes)
    }

    fn file(&self, segment: u64) -> io::Result<Arc<File>> {
        let mut files = self.files.lock().expect("segment files lock");
        if let Some(file) = files.get(&segment) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(path_of(&self.dir, segment))?);
        files.insert(segment, file.clone());
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_short_range_is_truncated() {
        let mut frames = Vec::new();
        for r in [&b"one"[..], b"", b"three"] {
            frame_into(&mut frames, r);
        }
        assert_eq!(lengths_of(&frames).unwrap(), vec![3, 0, 5]);
        let records: Vec<_> = records(&frames, &[3, 0, 5]).into_iter().collect();
        assert_eq!(
            records,
            vec![Ok(&b"one"[..]), Ok(&b""[..]), Ok(&b"three"[..])]
        );
        let short = super::records(&frames[..frames.len() - 1], &[3, 0, 5]);
        assert!(short[2].is_err() && short[0].is_ok());
        assert!(lengths_of(&frames[..frames.len() - 1]).is_err());
    }

    #[test]
    fn scan_finds_whole_groups_and_stops_at_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let group = |first: u64, records: &[&[u8]]| {
            let mut out = Vec::new();
            begin_group(&mut out);
            for r in records {
                frame_into(&mut out, r);
            }
            seal_group(&mut out, first, records.len() as u32);
            out
        };
        let mut writer = SegmentWriter::create(dir.path()).unwrap();
        let one = writer.append(&group(1, &[b"a", b"bc"])).unwrap();
        writer.append(&group(3, &[b"def"])).unwrap();
        let torn = group(4, &[b"ghij"]);
        writer.append(&torn[..torn.len() - 1]).unwrap();
        let mut next = SegmentWriter::create(dir.path()).unwrap();
        next.append(&group(9, &[b"later"])).unwrap();

        let (groups, left) = scan(dir.path(), (one.segment, 0)).unwrap();
        assert_eq!(left, torn.len() as u64 - 1, "the torn group is left unread");
        assert_eq!(groups.len(), 2, "nothing after the torn group");
        assert_eq!(groups[0].first_seq, 1);
        assert_eq!(groups[0].lengths, vec![1, 2]);
        assert_eq!(groups[0].frames.offset, one.offset + GROUP_HEADER);
        let records: Vec<_> = records(&groups[1].bytes, &groups[1].lengths);
        assert_eq!(records, vec![Ok(&b"def"[..])]);
        // From the middle of a file: only what follows is read, at its true offsets.
        let (groups, _) = scan(dir.path(), (one.segment, one.end())).unwrap();
        assert_eq!(groups[0].first_seq, 3);
        assert_eq!(groups[0].frames.offset, one.end() + GROUP_HEADER);

        // From the end of the second group of the first file, on into the next file.
        let (groups, left) = scan(dir.path(), (next.position().0, 0)).unwrap();
        assert_eq!((groups.len(), groups[0].first_seq, left), (1, 9, 0));
        // A flipped byte in a group's frames ends the log there too.
        let mut bad = group(20, &[b"xyz"]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        next.append(&bad).unwrap();
        let (groups, left) = scan(dir.path(), (next.position().0, 0)).unwrap();
        assert_eq!((groups.len(), left), (1, bad.len() as u64));
    }

    #[test]
    fn zeros_written_ahead_end_a_file_but_not_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let group = |first: u64, record: &[u8]| {
            let mut out = Vec::new();
            begin_group(&mut out);
            frame_into(&mut out, record);
            seal_group(&mut out, first, 1);
            out
        };
        let mut writer = SegmentWriter::create(dir.path()).unwrap();
        // A record that ends in zeros is still all read.
        let first = writer.append(&group(1, b"ends in zeros\0\0")).unwrap();
        let length = |id| std::fs::metadata(path_of(dir.path(), id)).unwrap().len();
        assert_eq!(length(first.segment), ZEROED_AHEAD);
        // A group across the zeroed end: zeros again behind it, up to the next step.
        let big = vec![7u8; ZEROED_AHEAD as usize];
        writer.append(&group(2, &big)).unwrap();
        assert_eq!(length(first.segment), 2 * ZEROED_AHEAD);
        let mut next = SegmentWriter::create(dir.path()).unwrap();
        next.append(&group(3, b"next file")).unwrap();

        let (groups, left) = scan(dir.path(), (first.segment, 0)).unwrap();
        let seqs: Vec<u64> = groups.iter().map(|g| g.first_seq).collect();
        assert_eq!((seqs, left), (vec![1, 2, 3], 0));
        assert!(groups[0].bytes.ends_with(b"zeros\0\0"));
    }

    #[test]
    fn writer_appends_reader_reads_and_a_new_writer_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = SegmentWriter::create(dir.path()).unwrap();
        let a = writer.append(b"hello").unwrap();
        let b = writer.append(b"world!").unwrap();
        writer.sync().unwrap();
        assert_eq!(a.end(), b.offset);
        assert_eq!(Location::decode(&b.encode()), Some(b));
        let reader = SegmentReader::new(dir.path().to_path_buf());
        assert_eq!(reader.read(&b).unwrap(), b"world!");
        let beyond = Location {
            offset: ZEROED_AHEAD,
            ..b
        };
        assert_eq!(
            reader.read(&beyond).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let next = SegmentWriter::create(dir.path()).unwrap();
        assert_eq!(next.position(), (a.segment + 1, 0));
    }
}
