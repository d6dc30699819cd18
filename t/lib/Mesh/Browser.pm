package Mesh::Browser;

# The operators' player page in headless Chromium (Debian's), driven by t/browser/play.mjs
# (playwright-core): what t/player.t and t/player_page.t share. The page and its headers come
# from dist/html and dist/conf, as `make dist` installs them.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Path qw(make_path);
use JSON::PP;
use Test::More;

# Skip the whole test file unless Chromium, node and t/browser/node_modules are there.
sub require_browser {
	plan(skip_all => 'no chromium, node or t/browser/node_modules (make test installs them)')
		unless -x '/usr/bin/chromium' && (grep { -x "$_/node" } split /:/, $ENV{PATH})
		&& -d 't/browser/node_modules/playwright-core';
}

# The player page's files (dist/html).
sub html { abs_path('dist/html') }

# Where screenshots go (t/out/, or TEST_NGINX_OUT), made if missing.
sub out_dir {
	my $out = $ENV{TEST_NGINX_OUT} // abs_path('t') . '/out';
	make_path($out);
	return $out;
}

# The location serving the page with its headers (conf/player_headers.conf).
sub player_location {
	my $html = html();
	return "location /player/ { root $html; include $html/../conf/player_headers.conf; }";
}

# The http-level include of nginx's MIME types (the page's scripts need theirs).
sub mime_types { 'include ' . html() . '/../conf/mime.types;' }

# Open `url` in Chromium, play for a while, save a screenshot to `shot`: play.mjs's JSON
# answer ({ ok, title, currentTime, errors }), `output` holding all it printed.
sub play {
	my ($url, $shot) = @_;
	unlink $shot;
	my $line = qx{cd t/browser && node play.mjs '$url' '$shot' 40000 2>&1};
	my $r = eval { decode_json((grep { /^\{/ } split /\n/, $line)[-1]) } // { ok => 0, errors => [$line] };
	$r->{output} = $line;
	return $r;
}

1;
