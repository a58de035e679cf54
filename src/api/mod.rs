//! HTTPS API.
pub async fn serve(_s: crate::config::Settings) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
