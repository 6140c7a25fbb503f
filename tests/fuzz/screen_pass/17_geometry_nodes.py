import bpy

obj = bpy.context.active_object
mod = obj.modifiers.new("GeoNodes", 'NODES')
group = bpy.data.node_groups.new("Scatter", 'GeometryNodeTree')
mod.node_group = group
nodes, links = group.nodes, group.links
inp = nodes.new('NodeGroupInput')
out = nodes.new('NodeGroupOutput')
dist = nodes.new('GeometryNodeDistributePointsOnFaces')
dist.inputs['Density'].default_value = 25.0
nt = group
print(nt.name, len(nodes), len(links))
