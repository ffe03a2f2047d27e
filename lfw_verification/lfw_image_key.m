function keys = lfw_image_key(paths)
%LFW_IMAGE_KEY  'identity/file' without extension: how labels and pair paths are matched.
%   keys = lfw_image_key(paths) for a cell array of strings (or one string). Same rule as image_key() in
%   evaluate.py: backslashes become '/', empty path components are dropped, the last two components are
%   kept and the file extension is removed, so '/lfw_patch/Name/Name_0001.jpg' and 'Name/Name_0001.png'
%   both give 'Name/Name_0001'.
single_path = ischar(paths);
if single_path
    paths = {paths};
end
keys = strrep(strtrim(paths), '\', '/');
keys = regexprep(keys, '/+', '/');
keys = regexprep(keys, '^/|/$', '');
keys = regexp(keys, '([^/]+/)?[^/]*$', 'match', 'once');
keys = regexprep(keys, '(?<=[^/])\.[^./]*$', '');
if single_path
    keys = keys{1};
end
end
