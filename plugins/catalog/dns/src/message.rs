//! The two parts of a DNS message (RFC 1035 §4.1) the metrics need: the
//! header and the first question's type. Hand-written on purpose: a DNS
//! library would decode every record of every message, and these few
//! bounds-checked reads are all the plugin does per packet.

/// What the plugin reads of one message.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    /// QR: a response, not a query.
    pub response: bool,
    /// RCODE (the header's four bits; extended codes need EDNS, not read).
    pub rcode: u8,
    /// QTYPE of the first question.
    pub qtype: u16,
}

impl Message {
    /// `None` if the bytes are no DNS message with at least one question
    /// (too short, no question, a name running past the end).
    pub fn parse(bytes: &[u8]) -> Option<Message> {
        let header = bytes.get(..12)?;
        let id = u16::from_be_bytes([header[0], header[1]]);
        let flags = u16::from_be_bytes([header[2], header[3]]);
        let qdcount = u16::from_be_bytes([header[4], header[5]]);
        if qdcount == 0 {
            return None;
        }
        // QNAME: labels of up to 63 bytes, ended by a zero length (a
        // question's name is never compressed, but a pointer ends it too).
        let mut at = 12;
        loop {
            let len = *bytes.get(at)?;
            match len {
                0 => {
                    at += 1;
                    break;
                }
                1..=63 => at += 1 + usize::from(len),
                0xc0..=0xff => {
                    at += 2;
                    break;
                }
                _ => return None,
            }
        }
        let qtype = bytes.get(at..at + 2)?;
        Some(Message {
            id,
            response: flags & 0x8000 != 0,
            rcode: (flags & 0x000f) as u8,
            qtype: u16::from_be_bytes([qtype[0], qtype[1]]),
        })
    }
}

/// The usual names of query types; others as `TYPE<n>` (RFC 3597).
pub fn qtype_name(qtype: u16) -> String {
    let name = match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        43 => "DS",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        n => return format!("TYPE{n}"),
    };
    name.into()
}

/// The names of the header's return codes (RFC 1035, RFC 2136).
pub fn rcode_name(rcode: u8) -> String {
    let name = match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        n => return format!("RCODE{n}"),
    };
    name.into()
}
