package Mesh::Node;

# A mesh node under a master (the fake one or the reference one), in one call: writes the
# node's key (mesh_master_key_file), an initial table file (writable by the worker), and a config with the given role
# and extra directives. `hls => { directive => value }` adds an edge's HTTP side
# (Mesh::Test::edge_http): a media root writable by the worker, the transcoder reading its own
# `relay` application, 1 s segments, and `/hls/` on PORT_2 (the hash adds or overrides
# http-level directives, and takes edge_http's options). `main => '...'`: main-level lines
# (worker_processes, rtmp_auto_push).

use strict;
use warnings;

use Mesh::Test;

sub under_master {
	my ($class, %o) = @_;
	my $t = Mesh::Test->new(name => $o{id});
	chmod 0777, $t->testdir;
	$t->write_file('master.key', $o{master}->node_key($o{id}) . "\n");
	$t->write_file('table.json', $o{table} // '{"version": 0}');
	my $murl = $o{master}->url;
	my $role = $o{role} ? "mesh_role $o{role};" : '';
	my $extra = $o{extra} // '';
	my $http = $o{hls}
		? $t->edge_http(mesh_ffmpeg => undef, renditions => [], mesh_rtmp_source => 'rtmp://127.0.0.1:%%PORT_1%%/relay',
			mesh_manifest_wait => '20s', %{$o{hls}})
		: $o{http} // '';
	$t->write_node_conf(apps => $o{apps}, http => $http, main => $o{main}, rtmp => qq{
    mesh_node_id $o{id};
    $role
    mesh_table_file table.json;
    mesh_master $murl;
    mesh_master_key_file master.key;
    mesh_heartbeat_interval 1s;
    mesh_poll_wait 3s;
    mesh_master_timeout 2s;
    $extra
});
	return $t;
}

1;
