#!/usr/bin/perl

# The operators' player page trusts only its own node: nginx serves it with a strict CSP,
# X-Frame-Options and Referrer-Policy (player_headers.conf); hls.js and dash.js still play in
# headless Chromium under that policy, with no violation in the console; a query naming another
# host (?hls=, ?dash=, as links could) makes the page ask nothing of it (a listener on
# 127.0.0.2, this host's loopback, counts connections); a bad stream name is refused in the page.

use strict;
use warnings;
use HTTP::Tiny;
use IO::Select;
use IO::Socket::INET;
use Test::More;
use lib 't/lib';
use Mesh::Test qw(publish wait_until log_lines reap viewer_token free_port);
use Mesh::Browser;

plan(skip_all => 'no nginx with the module (make dist)') unless Mesh::Test::has_binary();
Mesh::Browser::require_browser();
my $out = Mesh::Browser::out_dir();

my $t = Mesh::Test->new(name => 'player-page');
$t->write_standalone_table('s', cam1 => 'k1');
$t->write_node_conf(http => $t->edge_http(mesh_ffmpeg => undef, mesh_manifest_wait => undef,
	renditions => [ 'source', 'small 320x180 300k 64k' ], dash => 1, locations => Mesh::Browser::player_location(),
	head => Mesh::Browser::mime_types()));
$t->run;
my $base = 'http://127.0.0.1:' . $t->port(2) . '/player';

# The headers, on the page, its scripts and an error page alike.
my $ua = HTTP::Tiny->new(timeout => 10);
for my $path ('/', '/index.html', '/player.js', '/hls.worker.js', '/nope') {
	my $h = $ua->get("$base$path")->{headers};
	my $csp = $h->{'content-security-policy'} // '';
	like($csp, qr/^default-src 'none';/, "$path: CSP, nothing allowed by default");
	like($csp, qr/(^|; )script-src 'self'(;|$)/, "$path: scripts from the node only (no inline, no eval)");
	like($csp, qr/(^|; )connect-src 'self'(;|$)/, "$path: requests to the node only");
	like($csp, qr/(^|; )media-src 'self' blob:(;|$)/, "$path: media from the node (and MSE's blob:)");
	like($csp, qr/(^|; )frame-ancestors 'none'(;|$)/, "$path: no framing (CSP)");
	unlike($csp, qr/unsafe|\*/, "$path: no unsafe-*, no wildcard");
	is($h->{'x-frame-options'}, 'DENY', "$path: X-Frame-Options DENY");
	is($h->{'referrer-policy'}, 'no-referrer', "$path: Referrer-Policy no-referrer");
}
my $page = $ua->get("$base/index.html")->{content};
unlike($page, qr/<script>|<style>|\son[a-z]+=/i, 'no inline script, style or handler in the page');

my $pub = publish('rtmp://127.0.0.1:' . $t->port(1) . '/live/cam1?key=k1', secs => 120);
ok(wait_until(sub { log_lines($t, qr/publish accepted: stream "cam1"/) }, 5), 'published');
my $token = viewer_token('s', 'cam1', time + 600);

# Somewhere else a link may name: another address of this host, counting connections.
my $elsewhere = IO::Socket::INET->new(LocalAddr => '127.0.0.2', LocalPort => free_port(), Listen => 16, ReuseAddr => 1)
	or die "listen on 127.0.0.2: $!";
my $ep = $elsewhere->sockport;
my $hostile = "hls=http://127.0.0.2:$ep/&dash=//127.0.0.2:$ep/";

sub browse {
	my ($query, $shot) = @_;
	return Mesh::Browser::play("$base/index.html?$query", $shot);
}

for my $format ('hls', 'dash') {
	my $r = browse("stream=cam1&format=$format&token=$token&$hostile", "$out/player-page-$format.png");
	ok($r->{ok}, "$format: plays from its own node under the CSP ($r->{title})") or diag(explain($r));
	cmp_ok($r->{currentTime} // 0, '>=', 3, "$format: currentTime advanced");
	is_deeply($r->{errors}, [], "$format: no CSP violation, page or console error");
	ok(!IO::Select->new($elsewhere)->can_read(0), "$format: the host in the query got no connection");
}

my $r = browse("stream=..%2F..%2Fstatus&format=hls&token=$token", "$out/player-page-badname.png");
like($r->{title}, qr/^error: bad stream name/, 'a bad stream name: refused in the page') or diag(explain($r));
ok(!IO::Select->new($elsewhere)->can_read(0), 'still nothing elsewhere');

kill 'TERM', $pub;
reap($pub, 5);
$t->stop;
done_testing();
