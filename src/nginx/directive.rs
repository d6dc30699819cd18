//! What every directive handler shares: its arguments, the "is duplicate" answer, and nginx's
//! wording for an invalid value (`invalid value "x" in "d" directive, it must be ...`, with
//! the file and line).

use std::ffi::c_char;

use mesh_core::name::for_log;
use ngx::ngx_conf_log_error;

use super::ffi::*;
use super::util::{str_bytes, CONF_ERROR, CONF_OK};

/// A handler's answer to a directive given twice: nginx's parser makes it
/// `"x" directive is duplicate in <file>:<line>`.
pub const DUPLICATE: *mut c_char = c"is duplicate".as_ptr().cast_mut();

/// The directive's name (0) and arguments, as the parser holds them.
///
/// # Safety
/// `cf` is the configuration being parsed, in a directive handler.
pub unsafe fn args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: cf->args is an array of ngx_str_t filled by the parser for this directive.
    unsafe { (*(*cf).args).as_slice() }
}

/// Text of argument `i` (0: the directive's name), lossily decoded.
///
/// # Safety
/// `cf` is the configuration being parsed, with at least `i + 1` arguments.
pub unsafe fn arg(cf: *mut ngx_conf_t, i: usize) -> String {
    // SAFETY: the parser holds the argument strings for the directive's duration.
    unsafe { String::from_utf8_lossy(str_bytes(&args(cf)[i])).into_owned() }
}

/// Where the directive being parsed is: `<file>:<line>`, as nginx's messages end.
///
/// # Safety
/// `cf` is the configuration being parsed, in a directive handler.
pub unsafe fn location(cf: *mut ngx_conf_t) -> String {
    // SAFETY: the parser's current file (set while a file is parsed) and line.
    unsafe {
        let Some(f) = (*cf).conf_file.as_ref() else { return String::new() };
        format!("{}:{}", String::from_utf8_lossy(str_bytes(&f.file.name)), f.line)
    }
}

/// Log `invalid value "<value>" in "<directive>" directive, <why>` at emerg, where `why` is
/// nginx's "it must be ..."; returns `NGX_CONF_ERROR`.
///
/// # Safety
/// `cf` is the configuration being parsed, in a directive handler.
pub unsafe fn invalid_value(cf: *mut ngx_conf_t, value: &str, why: &str) -> *mut c_char {
    // SAFETY: as the caller guarantees.
    let name = unsafe { arg(cf, 0) };
    ngx_conf_log_error!(
        NGX_LOG_EMERG,
        cf,
        "invalid value \"{}\" in \"{}\" directive, {}",
        for_log(value),
        name,
        why
    );
    CONF_ERROR
}

/// The one shape of a single-value directive: refuse a duplicate, check the value (`check`
/// says why not, in nginx's words: "it must be ..."), store it in `slot`.
///
/// # Safety
/// `cf` is the configuration being parsed, in the handler of a directive with one argument.
pub unsafe fn set_once<T>(
    cf: *mut ngx_conf_t,
    slot: &mut Option<T>,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> *mut c_char {
    if slot.is_some() {
        return DUPLICATE;
    }
    // SAFETY: as the caller guarantees.
    let value = unsafe { arg(cf, 1) };
    match check(&value) {
        Ok(v) => {
            *slot = Some(v);
            CONF_OK
        }
        // SAFETY: as above.
        Err(why) => unsafe { invalid_value(cf, &value, &why) },
    }
}

/// The one shape of a directive handler: the `extern "C"` signature nginx calls, the panic
/// guard, and our conf at the directive's level as a typed `&mut`. The body gets the
/// configuration being parsed (`cf`), the command (`cmd`, when named) and the conf, and returns
/// nginx's answer (`CONF_OK`, `CONF_ERROR`, [`DUPLICATE`]). It runs in an `unsafe` context: each
/// nginx call in it still says why it holds.
macro_rules! directive {
    ($(#[$m:meta])* $vis:vis fn $name:ident($cf:ident, $conf:ident: &mut $t:ty) $body:block) => {
        $crate::nginx::directive::directive!($(#[$m])* $vis fn $name($cf, _cmd, $conf: &mut $t) $body);
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident($cf:ident, $cmd:ident, $conf:ident: &mut $t:ty) $body:block) => {
        $(#[$m])*
        $vis unsafe extern "C" fn $name(
            $cf: *mut $crate::nginx::ffi::ngx_conf_t,
            $cmd: *mut $crate::nginx::ffi::ngx_command_t,
            conf: *mut ::std::ffi::c_void,
        ) -> *mut ::std::ffi::c_char {
            $crate::nginx::util::guard($crate::nginx::util::CONF_ERROR, || {
                // SAFETY: nginx calls a directive handler with the configuration being parsed,
                // the directive's command, and our module's conf at the directive's level, of
                // the type its table entry says.
                #[allow(unused_unsafe, clippy::macro_metavars_in_unsafe)]
                unsafe {
                    let _ = $cmd;
                    let $conf: &mut $t = &mut *conf.cast::<$t>();
                    $body
                }
            })
        }
    };
}
pub(crate) use directive;
