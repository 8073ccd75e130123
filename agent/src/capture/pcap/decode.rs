//! Packet decoding: a captured frame of a known link type to the TCP
//! segment it carries, or nothing (not IP, not TCP, truncated, a fragment).

use std::net::SocketAddr;

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};

/// The link layers libpcap hands us, by their LINKTYPE_ numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1): Ethernet II, with 802.1Q/802.1ad tags.
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113): Linux cooked capture v1 (`-i any`).
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): Linux cooked capture v2.
    LinuxSll2,
    /// LINKTYPE_NULL (0) and LINKTYPE_LOOP (108): BSD loopback, a 4-byte
    /// address family (host order for NULL, network order for LOOP).
    Null,
    /// LINKTYPE_RAW (101, and DLT_RAW 12/14): the frame is an IP packet.
    Raw,
}

impl LinkType {
    /// The link type for a libpcap data-link number, if we can decode it.
    pub fn from_linktype(number: i32) -> Option<LinkType> {
        Some(match number {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            0 | 108 => LinkType::Null,
            12 | 14 | 101 => LinkType::Raw,
            _ => return None,
        })
    }
}

/// One TCP segment, borrowed from its frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Sequence number of the first payload byte (of the SYN itself on a SYN).
    pub seq: u32,
    /// SYN: opens the flow.
    pub syn: bool,
    /// ACK: the other side's bytes are acknowledged.
    pub ack: bool,
    /// FIN: the sender is done.
    pub fin: bool,
    /// RST: the flow is reset.
    pub rst: bool,
    /// The bytes it carries.
    pub payload: &'a [u8],
}

/// Linux cooked v2 header: protocol (2), reserved (2), ifindex (4),
/// ARPHRD type (2), packet type (1), address length (1), address (8).
const SLL2_HEADER_LEN: usize = 20;

/// Decodes `frame` of link type `link`; `None` when it is not a whole,
/// unfragmented TCP segment over IPv4 or IPv6.
pub fn decode(link: LinkType, frame: &[u8]) -> Option<Segment<'_>> {
    let sliced = match link {
        LinkType::Ethernet => SlicedPacket::from_ethernet(frame),
        LinkType::LinuxSll => SlicedPacket::from_linux_sll(frame),
        LinkType::LinuxSll2 => {
            let protocol = u16::from_be_bytes(frame.get(..2)?.try_into().ok()?);
            SlicedPacket::from_ether_type(EtherType(protocol), frame.get(SLL2_HEADER_LEN..)?)
        }
        // Both byte orders: the family is written in the capturing host's.
        LinkType::Null => SlicedPacket::from_ip(frame.get(4..)?),
        LinkType::Raw => SlicedPacket::from_ip(frame),
    }
    .ok()?;
    let (src, dst, fragmented) = match sliced.net.as_ref()? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.payload().fragmented,
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
            ip.payload().fragmented,
        ),
        NetSlice::Arp(_) => return None,
    };
    // A fragment's TCP header is not where etherparse looks: skip it
    // (TCP over loopback and most LANs is never fragmented).
    if fragmented {
        return None;
    }
    let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
        return None;
    };
    Some(Segment {
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use etherparse::{LinuxSllPacketType, PacketBuilder, VlanId};

    /// A TCP segment from 10.0.0.1:40000 to 10.0.0.2:80 on Ethernet.
    pub fn ethernet_segment(seq: u32, payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, seq, 1024)
            .ack(1);
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    fn check(link: LinkType, frame: &[u8], src: &str) {
        let segment = decode(link, frame).expect("decodes");
        assert_eq!(segment.src, src.parse().unwrap());
        assert_eq!(segment.seq, 7);
        assert!(segment.ack && !segment.syn && !segment.fin && !segment.rst);
        assert_eq!(segment.payload, b"GET /");
    }

    #[test]
    fn ethernet_ipv4() {
        check(
            LinkType::Ethernet,
            &ethernet_segment(7, b"GET /"),
            "10.0.0.1:40000",
        );
    }

    #[test]
    fn single_and_double_vlan() {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(VlanId::try_new(12).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 7, 1024)
            .ack(1)
            .write(&mut frame, b"GET /")
            .unwrap();
        check(LinkType::Ethernet, &frame, "10.0.0.1:40000");
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .double_vlan(VlanId::try_new(1).unwrap(), VlanId::try_new(2).unwrap())
            .ipv6([1; 16], [2; 16], 64)
            .tcp(40000, 80, 7, 1024)
            .ack(1)
            .write(&mut frame, b"GET /")
            .unwrap();
        check(
            LinkType::Ethernet,
            &frame,
            "[101:101:101:101:101:101:101:101]:40000",
        );
    }

    fn ipv6_packet() -> Vec<u8> {
        let mut packet = Vec::new();
        PacketBuilder::ipv6(
            std::net::Ipv6Addr::LOCALHOST.octets(),
            std::net::Ipv6Addr::LOCALHOST.octets(),
            64,
        )
        .tcp(40000, 80, 7, 1024)
        .ack(1)
        .write(&mut packet, b"GET /")
        .unwrap();
        packet
    }

    #[test]
    fn raw_null_sll_and_sll2() {
        let ip = ipv6_packet();
        check(LinkType::Raw, &ip, "[::1]:40000");
        let null = [&30u32.to_ne_bytes()[..], &ip].concat();
        check(LinkType::Null, &null, "[::1]:40000");
        let mut sll = Vec::new();
        PacketBuilder::linux_sll(LinuxSllPacketType::OUTGOING, 6, [0; 8])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
            .tcp(40000, 80, 7, 1024)
            .ack(1)
            .write(&mut sll, b"GET /")
            .unwrap();
        check(LinkType::LinuxSll, &sll, "127.0.0.1:40000");
        let mut sll2 = vec![0x86, 0xdd, 0, 0, 0, 0, 0, 1, 0, 1, 4, 6];
        sll2.extend([0; 8]);
        sll2.extend(&ip);
        check(LinkType::LinuxSll2, &sll2, "[::1]:40000");
    }

    #[test]
    fn not_tcp_or_truncated_is_nothing() {
        let mut udp = Vec::new();
        PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .udp(1, 2)
            .write(&mut udp, b"x")
            .unwrap();
        assert_eq!(decode(LinkType::Raw, &udp), None);
        let frame = ethernet_segment(7, b"GET /");
        assert_eq!(decode(LinkType::Ethernet, &frame[..30]), None);
        assert_eq!(decode(LinkType::LinuxSll2, &[0x08, 0]), None);
        assert_eq!(LinkType::from_linktype(276), Some(LinkType::LinuxSll2));
        assert_eq!(LinkType::from_linktype(127), None);
    }
}
