//! PROXY protocol v2 from configured load balancers (`server.proxy_protocol.trusted`),
//! so the audit origin is the client and not the balancer. Only a connection from a
//! trusted peer is read for a header, and it must start with one; nobody else's header
//! is ever parsed (it would be a forged origin), it simply fails the TLS handshake.

use std::net::{IpAddr, SocketAddr};

use proxy_header::{ParseConfig, ProxyHeader};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The fixed part of a v2 header: the 12-byte signature, version and command, family
/// and protocol, and the big-endian length of what follows.
const FIXED: usize = 16;
const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Whether connections from `peer` must carry a PROXY header.
pub fn trusted(trusted: &[ipnet::IpNet], peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&peer))
}

/// Reads the v2 header a trusted balancer sends first: exactly its bytes, nothing of
/// the TLS that follows. Returns the client's address, or `peer` for a `LOCAL` header
/// (the balancer's own health check).
pub async fn read_v2(tcp: &mut TcpStream, peer: SocketAddr) -> std::io::Result<SocketAddr> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut buf = vec![0u8; FIXED];
    tcp.read_exact(&mut buf).await?;
    if &buf[..12] != SIGNATURE {
        return Err(invalid("a trusted peer sent no PROXY v2 header"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    buf.resize(FIXED + len, 0);
    tcp.read_exact(&mut buf[FIXED..]).await?;
    let config = ParseConfig {
        include_tlvs: false,
        allow_v1: false,
        allow_v2: true,
    };
    let (header, used) =
        ProxyHeader::parse(&buf, config).map_err(|e| invalid(&format!("PROXY v2 header: {e}")))?;
    if used != buf.len() {
        return Err(invalid("PROXY v2 header length mismatch"));
    }
    Ok(header.proxied_address().map_or(peer, |a| a.source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_networks_are_trusted() {
        let nets: Vec<ipnet::IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        assert!(trusted(&nets, "10.0.0.9".parse().unwrap()));
        assert!(trusted(&nets, "::ffff:10.0.0.9".parse().unwrap()));
        assert!(!trusted(&nets, "10.0.1.9".parse().unwrap()));
        assert!(!trusted(&[], "127.0.0.1".parse().unwrap()));
    }
}
