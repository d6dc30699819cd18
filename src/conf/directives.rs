//! The `mesh_*` directives of the rtmp{} block, each in nginx's one shape (`set_once` into a
//! field of the main conf, with nginx's wording for a duplicate or an invalid value).

use mesh_agent::load::{os_error, read_table};
use mesh_agent::tls::{plain_to_remote, MasterCa};
use mesh_core::name::{for_log, is_valid_id};
use mesh_core::Role;
use ngx::ngx_conf_log_error;

use super::{MainConf, ENDPOINTS};
use crate::nginx::directive::{self, arg, args, directive, DUPLICATE};
use crate::nginx::ffi::*;
use crate::nginx::util::{full_name, str_bytes, CONF_ERROR, CONF_OK};

directive! {
    /// The single-value directives (`mesh_node_id`, `mesh_role`, `mesh_master`, `mesh_rtmp_url`,
    /// `mesh_http_url`): each into its field of the main conf, once, after its check.
    pub fn set_value(cf, m: &mut MainConf) {
        match arg(cf, 0).as_str() {
            "mesh_node_id" => directive::set_once(cf, &mut m.node_id, check_id),
            "mesh_role" => directive::set_once(cf, &mut m.role, |v| {
                v.parse::<Role>()
                    .map_err(|()| "it must be \"ingest\", \"root_relay\", \"relay\" or \"standalone\"".into())
            }),
            "mesh_master" => {
                // SAFETY: in this directive's handler.
                m.master_at = unsafe { directive::location(cf) };
                directive::set_once(cf, &mut m.master, |v| {
                    let url = check_http_url(v)?;
                    if plain_to_remote(&url) {
                        ngx_conf_log_error!(
                            NGX_LOG_WARN,
                            cf,
                            "\"mesh_master {}\" is plain HTTP to another host: the node's requests and tables cross the network in clear, use https:// and \"mesh_master_ca\"",
                            for_log(&url)
                        );
                    }
                    Ok(url)
                })
            }
            "mesh_rtmp_url" => directive::set_once(cf, &mut m.rtmp_url, public_url(&["rtmp://"])),
            "mesh_http_url" => directive::set_once(cf, &mut m.http_url, public_url(&["http://", "https://"])),
            _ => CONF_ERROR,
        }
    }
}

fn check_id(v: &str) -> Result<String, String> {
    match is_valid_id(v) {
        true => Ok(v.to_string()),
        false => Err("it must be 1-128 characters of A-Z a-z 0-9 _ -".into()),
    }
}

/// A node's public URL in one of `schemes`.
fn public_url(schemes: &'static [&'static str]) -> impl Fn(&str) -> Result<String, String> {
    move |v| {
        let ok = schemes.iter().any(|p| v.strip_prefix(p).is_some_and(|r| !r.is_empty()))
            && v.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| v.to_string()).ok_or_else(|| format!("it must be a {} URL", schemes.join(" or ")))
    }
}

directive! {
    pub fn set_table_file(cf, mcf: &mut MainConf) {
        if mcf.table_file.is_some() {
            return DUPLICATE;
        }
        // SAFETY: args(cf)[1] is the parser's string.
        let Some(path) = (unsafe { full_name(cf, args(cf)[1], true) }) else { return CONF_ERROR };
        // Configuration time, not the event loop: reading the file here is fine.
        match read_table(std::path::Path::new(&path)) {
            Ok(t) => {
                mcf.table = Some(t);
                mcf.table_file = Some(path);
                CONF_OK
            }
            Err(e) => {
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "mesh_table_file \"{}\": {}", path, e);
                CONF_ERROR
            }
        }
    }
}

/// `http(s)://host[:port][/prefix]` without query or fragment; returns it without a trailing
/// slash.
fn check_http_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("it must start with \"http://\" or \"https://\"")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("it has no host".into());
    }
    if rest.bytes().any(|b| !b.is_ascii_graphic() || b == b'?' || b == b'#') {
        return Err("it must not have a query, a fragment or spaces".into());
    }
    Ok(url.trim_end_matches('/').to_string())
}

directive! {
    /// `mesh_master_ca <file>`: the CA (PEM) an https master's certificate is verified against,
    /// read and checked here, at configuration time.
    pub fn set_master_ca(cf, mcf: &mut MainConf) {
        if mcf.master_ca.is_some() {
            return DUPLICATE;
        }
        // SAFETY: args(cf)[1] is the parser's string.
        let Some(path) = (unsafe { full_name(cf, args(cf)[1], true) }) else { return CONF_ERROR };
        match MasterCa::read(std::path::Path::new(&path)) {
            Ok(ca) => {
                mcf.master_ca = Some(ca);
                CONF_OK
            }
            Err(e) => {
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "mesh_master_ca \"{}\": {}", path, e);
                CONF_ERROR
            }
        }
    }
}

/// The master's settings taken together (init_main_conf): a CA is for an https master.
///
/// # Safety
/// `cf` is the configuration being parsed.
pub unsafe fn check_master_tls(cf: *mut ngx_conf_t, mcf: &MainConf) -> bool {
    let https = mcf.master.as_deref().is_some_and(|m| m.starts_with("https://"));
    if mcf.master_ca.is_some() && !https {
        ngx_conf_log_error!(NGX_LOG_EMERG, cf, "\"mesh_master_ca\" needs an https:// \"mesh_master\"");
        return false;
    }
    true
}

directive! {
    pub fn set_master_key(cf, cmd, mcf: &mut MainConf) {
        // SAFETY: the parser's argument and the command's name.
        let (value, name) = unsafe { (arg(cf, 1), String::from_utf8_lossy(str_bytes(&(*cmd).name)).into_owned()) };
        if mcf.master_key.is_some() {
            return DUPLICATE;
        }
        let key = if name == "mesh_master_key_file" {
            // SAFETY: args(cf)[1] is the parser's string.
            let Some(path) = (unsafe { full_name(cf, args(cf)[1], true) }) else { return CONF_ERROR };
            match std::fs::read(&path) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
                Err(e) => {
                    ngx_conf_log_error!(
                        NGX_LOG_EMERG,
                        cf,
                        "mesh_master_key_file \"{}\": {}",
                        path,
                        os_error("open", e)
                    );
                    return CONF_ERROR;
                }
            }
        } else {
            value
        };
        if key.is_empty() {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "empty master key in \"{}\" directive", name);
            return CONF_ERROR;
        }
        mcf.master_key = Some(key.into_bytes());
        CONF_OK
    }
}

directive! {
    pub fn set_master_path(cf, mcf: &mut MainConf) {
        // SAFETY: the parser's arguments.
        let (name, path) = unsafe { (arg(cf, 1), arg(cf, 2)) };
        let Some(i) = ENDPOINTS.iter().position(|e| *e == name) else {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid endpoint \"{}\" in \"mesh_master_path\" directive, it must be \"announce\", \"heartbeat\", \"streams\", \"auth\" or \"route\"",
                for_log(&name)
            );
            return CONF_ERROR;
        };
        if mcf.paths[i].is_some() {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "\"mesh_master_path\" directive \"{}\" is duplicate",
                name
            );
            return CONF_ERROR;
        }
        if !path.starts_with('/') || path.bytes().any(|b| !b.is_ascii_graphic() || b == b'?' || b == b'#') {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid path \"{}\" in \"mesh_master_path\" directive, it must start with \"/\" and have no query",
                for_log(&path)
            );
            return CONF_ERROR;
        }
        mcf.paths[i] = Some(path);
        CONF_OK
    }
}
