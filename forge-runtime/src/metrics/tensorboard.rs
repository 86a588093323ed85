//! A minimal TensorBoard event-file writer: scalars only, no protobuf or CRC crates.
//!
//! An event file is a sequence of TFRecords, each holding one serialised `tensorflow.Event`
//! protobuf message. A TFRecord is
//!
//! ```text
//! u64 length (little-endian) | u32 masked_crc32c(length bytes) | data | u32 masked_crc32c(data)
//! ```
//!
//! where `masked_crc32c(x) = ((crc >> 15) | (crc << 17)) + 0xa282ead8` (wrapping) and crc32c is
//! CRC-32 with the Castagnoli polynomial. The few protobuf fields used are encoded by hand:
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```
//!
//! CRC-32C is implemented here (a 1 KiB table computed at compile time) rather than taken from
//! the `crc32c` crate: an event file sees a few hundred bytes per scalar, so a table-driven
//! software CRC is far from any bottleneck, and it saves a dependency with a build script.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes scalars to a TensorBoard event file (`events.out.tfevents.<unix-secs>.<host>`).
///
/// Records are buffered; call [`EventWriter::flush`] to make them visible to a running
/// TensorBoard. Dropping the writer flushes too, but ignores errors.
#[derive(Debug)]
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir` (and its parents) if needed and a new event file in it, named
    /// `events.out.tfevents.<unix-secs>.<hostname>` (`forge` when the host name is unknown), and
    /// writes the leading `file_version = "brain.Event:2"` event.
    ///
    /// The file is never overwritten: if another writer made the same name in the same second,
    /// a suffix `.1`, `.2`, … is added (TensorBoard reads every file whose name contains
    /// `tfevents`).
    pub fn create(dir: &Path) -> Result<Self, io::Error> {
        fs::create_dir_all(dir)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(io::Error::other)?;
        let base = format!("events.out.tfevents.{}.{}", now.as_secs(), hostname());
        let mut attempt = 0u32;
        let (file, path) = loop {
            let name = if attempt == 0 {
                base.clone()
            } else {
                format!("{base}.{attempt}")
            };
            let path = dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (file, path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 1000 => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let mut writer = Self {
            out: BufWriter::new(file),
            path,
        };
        let mut event = Vec::with_capacity(32);
        put_double(&mut event, 1, wall_time());
        put_bytes(&mut event, 3, b"brain.Event:2");
        writer.write_record(&event)?;
        writer.flush()?;
        Ok(writer)
    }

    /// The path of the event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one scalar event: `tag` at `step` with `value`, stamped with the current wall time.
    pub fn scalar(&mut self, tag: &str, step: i64, value: f32) -> io::Result<()> {
        let mut value_msg = Vec::with_capacity(tag.len() + 8);
        put_bytes(&mut value_msg, 1, tag.as_bytes());
        // `simple_value` sits in a `oneof` in TensorFlow's summary.proto, so it is written even
        // when it is 0.0 (the proto3 default) — otherwise readers would see no value at all.
        put_float(&mut value_msg, 2, value);
        let mut summary = Vec::with_capacity(value_msg.len() + 4);
        put_bytes(&mut summary, 1, &value_msg);
        let mut event = Vec::with_capacity(summary.len() + 24);
        put_double(&mut event, 1, wall_time());
        if step != 0 {
            put_tag(&mut event, 2, WIRE_VARINT);
            // int64 is encoded as the varint of its two's complement (10 bytes when negative).
            put_varint(&mut event, step as u64);
        }
        put_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    /// Flushes buffered records to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn write_record(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc32c(&len).to_le_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(&masked_crc32c(data).to_le_bytes())
    }
}

/// The host name for the file name, restricted to `[A-Za-z0-9._-]`; `forge` if unknown.
fn hostname() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    if clean.is_empty() {
        "forge".to_string()
    } else {
        clean
    }
}

/// Seconds since the Unix epoch, as TensorBoard's `wall_time`.
fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

fn put_double(buf: &mut Vec<u8>, field: u32, v: f64) {
    put_tag(buf, field, WIRE_FIXED64);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_float(buf: &mut Vec<u8>, field: u32, v: f32) {
    put_tag(buf, field, WIRE_FIXED32);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, v: &[u8]) {
    put_tag(buf, field, WIRE_LEN);
    put_varint(buf, v.len() as u64);
    buf.extend_from_slice(v);
}

/// Lookup table for CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), built at compile time.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32C of `data`.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC-32C.
fn masked_crc32c(data: &[u8]) -> u32 {
    // `(crc >> 15) | (crc << 17)` is a rotation right by 15 bits.
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit-at-a-time CRC-32C, independent of the table, to cross-check it.
    fn crc32c_bitwise(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                let mask = (crc & 1).wrapping_neg();
                crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
            }
        }
        !crc
    }

    /// xorshift64*: deterministic pseudo-random numbers without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    #[test]
    fn crc32c_known_vectors() {
        // The CRC catalogue's check value and the RFC 3720 (iSCSI) test vectors.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113F_DB5C);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn crc32c_table_matches_bitwise_on_random_data() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for len in 0..300 {
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            assert_eq!(crc32c(&data), crc32c_bitwise(&data), "len {len}");
        }
    }

    #[test]
    fn varints_encode_like_protobuf() {
        let enc = |v: u64| {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            b
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(1), [0x01]);
        assert_eq!(enc(127), [0x7F]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xAC, 0x02]);
        assert_eq!(
            enc(-1i64 as u64),
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
        );
    }

    // ---- An independent reader for the test: TFRecord framing and the protobuf subset. ----

    fn read_records(bytes: &[u8]) -> Vec<Vec<u8>> {
        // The formula as TFRecord documents it, independent of the writer's `rotate_right`.
        #[expect(
            clippy::manual_rotate,
            reason = "spelled out as in the TFRecord format"
        )]
        let mask = |crc: u32| ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8);
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let mut records = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            assert!(bytes.len() >= at + 12, "truncated header at byte {at}");
            let len_bytes = &bytes[at..at + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
            assert_eq!(
                u32_at(at + 8),
                mask(crc32c_bitwise(len_bytes)),
                "length crc at {at}"
            );
            let data_at = at + 12;
            assert!(
                bytes.len() >= data_at + len + 4,
                "truncated record at byte {at}"
            );
            let data = &bytes[data_at..data_at + len];
            assert_eq!(
                u32_at(data_at + len),
                mask(crc32c_bitwise(data)),
                "data crc at {at}"
            );
            records.push(data.to_vec());
            at = data_at + len + 4;
        }
        records
    }

    #[derive(Debug, PartialEq)]
    enum Field {
        Varint(u64),
        Fixed64([u8; 8]),
        Bytes(Vec<u8>),
        Fixed32([u8; 4]),
    }

    fn read_varint(b: &[u8], at: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = b[*at];
            *at += 1;
            v |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
        }
        panic!("varint too long");
    }

    fn read_fields(b: &[u8]) -> Vec<(u64, Field)> {
        let mut at = 0;
        let mut out = Vec::new();
        while at < b.len() {
            let key = read_varint(b, &mut at);
            let field = match key & 7 {
                0 => Field::Varint(read_varint(b, &mut at)),
                1 => {
                    at += 8;
                    Field::Fixed64(b[at - 8..at].try_into().expect("8 bytes"))
                }
                2 => {
                    let len = read_varint(b, &mut at) as usize;
                    at += len;
                    Field::Bytes(b[at - len..at].to_vec())
                }
                5 => {
                    at += 4;
                    Field::Fixed32(b[at - 4..at].try_into().expect("4 bytes"))
                }
                w => panic!("unexpected wire type {w}"),
            };
            out.push((key >> 3, field));
        }
        out
    }

    /// Decoded `Event`: wall_time, step, file_version, and (tag, value) pairs of its summary.
    #[derive(Debug, Default)]
    struct Event {
        wall_time: f64,
        step: i64,
        file_version: Option<String>,
        values: Vec<(String, f32)>,
    }

    fn decode_event(b: &[u8]) -> Event {
        let mut ev = Event::default();
        for (num, field) in read_fields(b) {
            match (num, field) {
                (1, Field::Fixed64(x)) => ev.wall_time = f64::from_le_bytes(x),
                (2, Field::Varint(x)) => ev.step = x as i64,
                (3, Field::Bytes(x)) => ev.file_version = Some(String::from_utf8(x).expect("utf8")),
                (5, Field::Bytes(summary)) => {
                    for (snum, value) in read_fields(&summary) {
                        let (1, Field::Bytes(value)) = (snum, value) else {
                            panic!("unexpected Summary field {snum}");
                        };
                        let (mut tag, mut v) = (None, None);
                        for (vnum, f) in read_fields(&value) {
                            match (vnum, f) {
                                (1, Field::Bytes(t)) => {
                                    tag = Some(String::from_utf8(t).expect("utf8"))
                                }
                                (2, Field::Fixed32(x)) => v = Some(f32::from_le_bytes(x)),
                                other => panic!("unexpected Value field {other:?}"),
                            }
                        }
                        ev.values
                            .push((tag.expect("tag"), v.expect("simple_value")));
                    }
                }
                other => panic!("unexpected Event field {other:?}"),
            }
        }
        ev
    }

    #[test]
    fn written_scalars_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("runs/a");
        let mut rng = Rng(42);
        let tags = ["reward/mean", "loss/policy", "eval/accuracy", "ünïcødé/τ"];
        let mut expected = Vec::new();
        for i in 0..200i64 {
            let tag = tags[(rng.next() % tags.len() as u64) as usize];
            let step = match i {
                0 => 0,
                1 => -5,
                2 => i64::MAX,
                3 => i64::MIN,
                _ => (rng.next() % 1_000_000) as i64,
            };
            let value = match i {
                4 => 0.0,
                5 => -0.0,
                6 => f32::INFINITY,
                _ => f32::from_bits(rng.next() as u32 & 0xBF7F_FFFF), // finite, |v| < 2
            };
            expected.push((tag.to_string(), step, value));
        }

        let before = wall_time();
        let mut w = EventWriter::create(&sub).expect("create");
        for (tag, step, value) in &expected {
            w.scalar(tag, *step, *value).expect("scalar");
        }
        w.flush().expect("flush");
        let after = wall_time();

        let name = w
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let secs: u64 = name
            .split('.')
            .nth(3)
            .and_then(|s| s.parse().ok())
            .expect("secs");
        assert!(
            secs as f64 <= after && secs as f64 >= before.floor(),
            "{secs}"
        );

        let bytes = fs::read(w.path()).expect("read");
        let records = read_records(&bytes);
        assert_eq!(records.len(), expected.len() + 1);
        let first = decode_event(&records[0]);
        assert_eq!(first.file_version.as_deref(), Some("brain.Event:2"));
        assert!(first.values.is_empty());
        for (record, (tag, step, value)) in records[1..].iter().zip(&expected) {
            let ev = decode_event(record);
            assert!(
                ev.wall_time >= before && ev.wall_time <= after,
                "{}",
                ev.wall_time
            );
            assert_eq!(ev.step, *step);
            assert_eq!(ev.file_version, None);
            assert_eq!(ev.values.len(), 1);
            assert_eq!(&ev.values[0].0, tag);
            assert_eq!(ev.values[0].1.to_bits(), value.to_bits(), "{tag}@{step}");
        }
    }

    #[test]
    fn second_writer_in_same_second_gets_its_own_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut a = EventWriter::create(dir.path()).expect("a");
        let mut b = EventWriter::create(dir.path()).expect("b");
        let mut c = EventWriter::create(dir.path()).expect("c");
        assert_ne!(a.path(), b.path());
        assert_ne!(b.path(), c.path());
        assert_ne!(a.path(), c.path());
        a.scalar("x", 1, 1.0).expect("a");
        b.scalar("x", 2, 2.0).expect("b");
        c.scalar("x", 3, 3.0).expect("c");
        for (w, step) in [(&mut a, 1), (&mut b, 2), (&mut c, 3)] {
            w.flush().expect("flush");
            let records = read_records(&fs::read(w.path()).expect("read"));
            assert_eq!(records.len(), 2);
            let ev = decode_event(&records[1]);
            assert_eq!(ev.step, step);
            assert_eq!(ev.values, vec![("x".to_string(), step as f32)]);
        }
    }

    #[test]
    fn corrupting_a_byte_breaks_the_crc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = EventWriter::create(dir.path()).expect("create");
        w.scalar("loss", 7, 0.25).expect("scalar");
        w.flush().expect("flush");
        let mut bytes = fs::read(w.path()).expect("read");
        let last = bytes.len() - 6; // inside the last record's data
        bytes[last] ^= 0x01;
        let result = std::panic::catch_unwind(|| read_records(&bytes));
        assert!(
            result.is_err(),
            "the test reader must reject a corrupted record"
        );
    }

    #[test]
    fn hostname_is_sanitised_and_non_empty() {
        let h = hostname();
        assert!(!h.is_empty());
        assert!(
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        );
    }
}
